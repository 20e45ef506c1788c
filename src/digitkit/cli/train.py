"""`digitkit train`: parse options, load data, call digitkit.train.Trainer."""

from __future__ import annotations

import sys

import click

from digitkit.architectures import ARCHITECTURES, DEFAULT_ARCH, TRAIN_DEFAULTS


def _arch_help() -> str:
    return "; ".join(f"{k}: {v}" for k, v in ARCHITECTURES.items())


def _per_arch(key: str, fmt=str) -> str:
    """'22 for cnn, 3 for seed-mlp': the defaults as TRAIN_DEFAULTS holds them, never a copy."""
    return ", ".join(f"{fmt(d[key])} for {arch}" for arch, d in TRAIN_DEFAULTS.items())


def _on_off(v: bool) -> str:
    return "on" if v else "off"


@click.command("train")
@click.option("--arch", type=click.Choice(list(ARCHITECTURES)), default=DEFAULT_ARCH,
              show_default=True, help=f"Architecture ({_arch_help()}).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help=f"Epochs [default: {_per_arch('epochs')}].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help=f"Batch size [default: {_per_arch('batch_size')}].")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help=f"Adam learning rate, cosine-decayed for cnn "
                   f"[default: {_per_arch('learning_rate', '{:g}'.format)}].")
@click.option("--augment/--no-augment", default=None,
              help=f"Random shifts/rotations/scaling [default: {_per_arch('augment', _on_off)}].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for weights, shuffling and augmentation.")
@click.option("--validation-size", type=click.IntRange(min=0), default=None,
              help="Training images held out for validation curves (the last N); 0 trains on "
                   f"all and monitors the test set [default: {_per_arch('validation_size')}].")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Train on the first N training images only (quick experiments).")
@click.option("--data", "data_path", type=click.Path(path_type=str), default=None,
              help="MNIST IDX directory, mnist.npz, or folder with train/ and test/ image folders "
                   "[default: $DIGITKIT_DATA, then the cache, then download].")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=str),
              default=None, help="Output directory [default: runs/<arch>].")
@click.option("--force", is_flag=True, help="Overwrite an existing model in the output directory.")
@click.option("-q", "--quiet", is_flag=True, help="No per-epoch progress.")
def command(**opts):
    """Train a digit classifier on MNIST and write model.h5 with its reports."""
    from digitkit.cli.data import _progress
    from digitkit.data import load_mnist
    from digitkit.model.loading import require_tensorflow
    from digitkit.train import TrainConfig, Trainer

    require_tensorflow("digitkit train")  # before minutes of data download, not after

    quiet, data_path = opts.pop("quiet"), opts.pop("data_path")
    out_dir, force = opts.pop("out_dir"), opts.pop("force")
    config = TrainConfig(**opts)
    trainer = Trainer(config, out_dir or f"runs/{config.arch}", force=force,
                      verbose=0 if quiet else (1 if sys.stdout.isatty() else 2))
    config.resolved()  # bad combinations fail before data is read
    trainer.check_output()
    data = load_mnist(data_path, progress=None if quiet else _progress)
    if not quiet:
        click.echo(f"data: {data.source} ({len(data.x_train)} train, {len(data.x_test)} test)")
    record = trainer.fit(data)
    t = record["test"]
    click.echo(f"test accuracy {t['accuracy']:.4f}, loss {t['loss']:.4f} "
               f"({record['wall_seconds']:.1f} s); wrote {trainer.out_dir}/"
               "{model.h5, train.json, history.png, classification_report.txt, "
               "confusion_matrix.png}")
