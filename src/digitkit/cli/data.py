"""`digitkit data`: fetch and verify MNIST, or write it out as an image folder."""

from __future__ import annotations

import sys

import click


@click.group("data")
def command():
    """Fetch, verify and convert the MNIST data."""


_DATA_OPTION = click.option(
    "--data", "data_path", type=click.Path(path_type=str), default=None,
    help="MNIST IDX directory or mnist.npz [default: $DIGITKIT_DATA, then the cache, then "
         "download].")


@command.command("fetch")
@_DATA_OPTION
def fetch(data_path):
    """Resolve MNIST (downloading into the cache if needed) and verify every checksum."""
    from digitkit.data import load_mnist

    d = load_mnist(data_path, progress=_progress)
    click.echo(f"source: {d.source}")
    click.echo(f"train: {len(d.x_train)} images, test: {len(d.x_test)} images")
    for name, md5 in d.checksums.items():
        click.echo(f"  md5 {md5}  {name}")


@command.command("export-png")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="First N images only.")
@_DATA_OPTION
def export_png(out_dir, split, limit, data_path):
    """Write a split as OUT_DIR/<label>/<index>.png, the layout `digitkit infer` reads.

    Test images are numbered from 60000, as in the public mnist-pngs collection.
    """
    from digitkit.data import load_mnist, write_png_folder

    d = load_mnist(data_path, progress=_progress)
    x, y = (d.x_test, d.y_test) if split == "test" else (d.x_train, d.y_train)
    if limit:
        x, y = x[:limit], y[:limit]
    n = write_png_folder(x, y, out_dir, first_index=60000 if split == "test" else 0)
    click.echo(f"wrote {n} PNG files under {out_dir}/<label>/")


def _progress(name: str, done: int, total: int) -> None:
    if sys.stderr.isatty():
        pct = f"{100 * done / total:5.1f}%" if total else f"{done} bytes"
        click.echo(f"\rdownloading {name}: {pct}", err=True, nl=done == total)
