"""`digitkit train`: parse options, load data, call digitkit.train.Trainer."""

from __future__ import annotations

import sys

import click

from digitkit.architectures import ARCHITECTURES, DEFAULT_ARCH


def _arch_help() -> str:
    return "; ".join(f"{k}: {v}" for k, v in ARCHITECTURES.items())


@click.command("train")
@click.option("--arch", type=click.Choice(list(ARCHITECTURES)), default=DEFAULT_ARCH,
              show_default=True, help=f"Architecture ({_arch_help()}).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs [default: 12 for cnn, 3 for seed-mlp].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Batch size [default: 128 for cnn, 32 for seed-mlp].")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Adam learning rate [default: 3e-3 cosine-decayed for cnn, 1e-3 for seed-mlp].")
@click.option("--augment/--no-augment", default=None,
              help="Random shifts/rotations/scaling [default: on for cnn, off for seed-mlp].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for weights, shuffling and augmentation.")
@click.option("--validation-size", type=click.IntRange(min=0), default=None,
              help="Training images held out for validation curves (the last N); 0 trains on "
                   "all and monitors the test set [default: 5000 for cnn, 0 for seed-mlp].")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Train on the first N training images only (quick experiments).")
@click.option("--data", "data_path", type=click.Path(path_type=str), default=None,
              help="MNIST IDX directory, mnist.npz, or folder with train/ and test/ image folders "
                   "[default: $DIGITKIT_DATA, then the cache, then download].")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=str),
              default=None, help="Output directory [default: runs/<arch>].")
@click.option("--force", is_flag=True, help="Overwrite an existing model in the output directory.")
@click.option("-q", "--quiet", is_flag=True, help="No per-epoch progress.")
def command(arch, epochs, batch_size, learning_rate, augment, seed, validation_size, limit,
            data_path, out_dir, force, quiet):
    """Train a digit classifier on MNIST and write model.h5 with its reports."""
    from digitkit.cli.data import _progress
    from digitkit.data import load_mnist
    from digitkit.train import TrainConfig, Trainer

    config = TrainConfig(arch=arch, epochs=epochs, batch_size=batch_size,
                         learning_rate=learning_rate, augment=augment, seed=seed,
                         validation_size=validation_size, limit=limit)
    trainer = Trainer(config, out_dir or f"runs/{arch}", force=force,
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

