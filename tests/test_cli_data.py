import numpy as np
from click.testing import CliRunner
from PIL import Image

from digitkit.cli import cli


def test_fetch_prints_verified_checksums(mnist_dir):
    result = CliRunner().invoke(cli, ["data", "fetch", "--data", str(mnist_dir)])
    assert result.exit_code == 0, result.output
    assert "md5 2646ac647ad5339dbf082846283269ea  t10k-images-idx3-ubyte.gz" in result.output


def test_export_png_roundtrips_and_never_overwrites(tmp_path, mnist_dir, mnist_test):
    out = tmp_path / "pngs"
    args = ["data", "export-png", str(out), "--limit", "25", "--data", str(mnist_dir)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    files = sorted(out.rglob("*.png"))
    assert len(files) == 25
    x, y = mnist_test
    for f in files:
        i = int(f.stem) - 60000
        assert int(f.parent.name) == y[i]
        np.testing.assert_array_equal(np.asarray(Image.open(f)), x[i])
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and "already exists" in again.output
