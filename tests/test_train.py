import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from digitkit.cli import cli
from digitkit.errors import UsageError
from digitkit.train import ARTIFACTS, TrainConfig


def _train(tmp_path, mnist_dir, out="run", *extra):
    args = ["train", "--arch", "seed-mlp", "--data", str(mnist_dir), "--out", str(tmp_path / out),
            "--limit", "3000", "--epochs", "2", "--validation-size", "500", *extra]
    return CliRunner().invoke(cli, args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_dir):
    tmp = tmp_path_factory.mktemp("train")
    result = _train(tmp, mnist_dir)
    assert result.exit_code == 0, result.output
    return tmp / "run", result


def test_writes_every_artifact(trained):
    out, result = trained
    assert sorted(p.name for p in out.iterdir()) == sorted(ARTIFACTS)
    assert "test accuracy" in result.output
    for png in ("history.png", "confusion_matrix.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.width > 400


def test_record_holds_config_data_history_metrics(trained):
    out, _ = trained
    rec = json.loads((out / "train.json").read_text())
    assert rec["config"]["arch"] == "seed-mlp" and rec["config"]["epochs"] == 2
    assert rec["config"]["batch_size"] == 32  # the reference recipe's default
    assert rec["data"]["checksums_md5"]["t10k-images-idx3-ubyte.gz"] == \
        "2646ac647ad5339dbf082846283269ea"
    assert rec["data"]["train_images"] == 2500 and rec["data"]["validation_images"] == 500
    assert "held out" in rec["data"]["validation_source"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(rec["history"][key]) == 2
    assert 0.75 < rec["test"]["accuracy"] <= 1.0
    assert rec["test"]["report"]["per_class"]["7"]["support"] == 1028
    assert rec["environment"]["tensorflow"].startswith("2.")
    assert rec["wall_seconds"] > 0


def test_report_matches_the_model_it_describes(trained, mnist_test):
    import keras

    out, _ = trained
    model = keras.models.load_model(out / "model.h5")
    x, y = mnist_test
    acc = float(np.mean(model.predict(x.astype(np.float32), verbose=0).argmax(1) == y))
    rec = json.loads((out / "train.json").read_text())
    assert acc == pytest.approx(rec["test"]["accuracy"], abs=1e-4)
    report = (out / "classification_report.txt").read_text()
    assert report.split("\n")[0].split() == ["precision", "recall", "f1-score", "support"]
    assert f"{acc:.4f}" in report.split("accuracy")[1].split("\n")[0]


def test_same_seed_same_metrics(trained, tmp_path, mnist_dir):
    """Determinism: a second run with the same seed matches to 1e-6 (observed: bit-identical)."""
    first = json.loads((trained[0] / "train.json").read_text())
    assert _train(tmp_path, mnist_dir).exit_code == 0
    second = json.loads((tmp_path / "run" / "train.json").read_text())
    for key, values in first["history"].items():
        np.testing.assert_allclose(second["history"][key], values, atol=1e-6)
    assert second["test"]["accuracy"] == pytest.approx(first["test"]["accuracy"], abs=1e-6)


def test_refuses_to_overwrite_without_force(trained, tmp_path, mnist_dir):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.h5").write_bytes(b"precious")
    result = _train(tmp_path, mnist_dir)
    assert result.exit_code == 1
    assert "model.h5: already exists; pass --force to overwrite" in result.output
    assert (out / "model.h5").read_bytes() == b"precious"
    assert _train(tmp_path, mnist_dir, "run", "--force", "--epochs", "1").exit_code == 0
    assert (out / "model.h5").read_bytes() != b"precious"


def test_cnn_with_augmentation_trains(tmp_path, mnist_dir):
    result = CliRunner().invoke(cli, [
        "train", "--data", str(mnist_dir), "--out", str(tmp_path / "cnn"), "--limit", "1200",
        "--epochs", "1", "--validation-size", "200", "--quiet"])
    assert result.exit_code == 0, result.output
    rec = json.loads((tmp_path / "cnn" / "train.json").read_text())
    assert rec["config"]["arch"] == "cnn" and rec["config"]["augment"] is True
    assert rec["test"]["accuracy"] > 0.3  # 1,000 images, one epoch: learning, not converged


def test_augmentation_is_deterministic_and_label_preserving(mnist_test):
    from digitkit.train import _augment

    x, y = mnist_test[0][:64], mnist_test[1][:64]
    a, ya = _augment(np.int64(3), (x, y), 0)
    b, _ = _augment(np.int64(3), (x, y), 0)
    c, _ = _augment(np.int64(4), (x, y), 0)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    np.testing.assert_array_equal(np.asarray(ya), y)
    # Small transforms keep the ink: total intensity within 25 % of the original per image.
    ratio = np.asarray(a).sum(axis=(1, 2)) / x.astype(np.float64).sum(axis=(1, 2))
    assert ((ratio > 0.75) & (ratio < 1.25)).all()


@pytest.mark.parametrize("field, value, message", [
    ("arch", "vgg", "unknown architecture"),
    ("epochs", 0, "--epochs"),
    ("batch_size", 0, "--batch-size"),
    ("limit", 0, "--limit"),
])
def test_bad_config(field, value, message):
    with pytest.raises(UsageError, match=message):
        TrainConfig(**{field: value}).resolved()


def test_missing_data_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "nope"),
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"digitkit: error: {tmp_path / 'nope'}: no such file or directory"]


def test_validation_size_zero_trains_on_all_and_monitors_the_test_set(tmp_path, mnist_dir):
    result = CliRunner().invoke(cli, [
        "train", "--arch", "seed-mlp", "--data", str(mnist_dir), "--out", str(tmp_path / "r"),
        "--limit", "2000", "--epochs", "1", "--validation-size", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    rec = json.loads((tmp_path / "r" / "train.json").read_text())
    assert rec["data"]["train_images"] == 2000 and rec["data"]["validation_images"] == 10000
    assert rec["data"]["validation_source"].startswith("test set (monitoring only")
    # The monitor's last figure is the final test accuracy: same model, same images.
    assert rec["history"]["val_accuracy"][-1] == pytest.approx(rec["test"]["accuracy"], abs=1e-4)


def test_help_shows_the_defaults_the_trainer_uses():
    """--help reads TRAIN_DEFAULTS; a changed default cannot leave a stale help text."""
    from digitkit.architectures import TRAIN_DEFAULTS

    text = " ".join(CliRunner().invoke(cli, ["train", "--help"]).output.split()).replace("- ", "-")
    for arch, d in TRAIN_DEFAULTS.items():
        assert f"{d['epochs']} for {arch}" in text
        assert f"{d['batch_size']} for {arch}" in text
        assert f"{d['validation_size']} for {arch}" in text


def test_click_usage_errors_are_one_line():
    r = CliRunner().invoke(cli, ["train", "--arch", "nope"])
    assert r.exit_code == 2
    line = r.output.strip()
    assert "\n" not in line and line.startswith("digitkit: error: ")
    assert "'nope' is not one of" in line and "digitkit train --help" in line
