"""`digitkit train [DIR]`: parse options, load data, call digitkit.train's trainers (MNIST
without DIR, `FolderTrainer` on a labelled folder)."""

from __future__ import annotations

import sys

import click

from digitkit.architectures import (
    ARCHITECTURES,
    DEFAULT_ARCH,
    DEFAULT_FOLDER_ARCH,
    TABLE,
)
from digitkit.model.policy import RESIZE_MODES
from digitkit.train.folder_data import DEFAULT_VAL_FRACTION, MIN_PER_CLASS

#: Options that apply to one kind of training only: (flag, parameter name, its default).
_MNIST_ONLY = (("--data", "data_path", None), ("--validation-size", "validation_size", None),
               ("--limit", "limit", None))
_FOLDER_ONLY = (("--val-fraction", "val_fraction", None), ("--input-size", "input_size", None),
                ("--channels", "channels", None), ("--resize", "resize", None),
                ("--weights", "weights", None), ("--fine-tune-epochs", "fine_tune_epochs", None),
                ("--flip", "flip", False))


def _arch_help() -> str:
    return "; ".join(f"{k}: {v}" for k, v in ARCHITECTURES.items())


def _per_arch(key: str, fmt=str) -> str:
    """'22 for cnn, 3 for seed-mlp, ...': the defaults as the table holds them, never a copy."""
    return ", ".join(f"{fmt(a.defaults[key])} for {name}" for name, a in TABLE.items()
                     if key in a.defaults)


def _on_off(v: bool) -> str:
    return "on" if v else "off"


def _size(ctx, param, value):
    if value is None:
        return None
    try:
        h, w = (int(v) for v in value.lower().split("x"))
        if h >= 1 and w >= 1:
            return h, w
    except ValueError:
        pass
    raise click.BadParameter(f"{value!r} is not HxW (e.g. 64x64)")


@click.command("train")
@click.argument("folder", metavar="[DIR]", required=False, type=click.Path(path_type=str))
@click.option("--arch", type=click.Choice(list(ARCHITECTURES)), default=None,
              help=f"Architecture ({_arch_help()}) [default: {DEFAULT_ARCH} for MNIST, "
                   f"{DEFAULT_FOLDER_ARCH} for a folder].")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help=f"Epochs [default: {_per_arch('epochs')}].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help=f"Batch size [default: {_per_arch('batch_size')}].")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help=f"Adam learning rate, cosine-decayed for cnn and small-cnn "
                   f"[default: {_per_arch('learning_rate', '{:g}'.format)}].")
@click.option("--augment/--no-augment", default=None,
              help=f"Random shifts/rotations/scaling (and brightness for a folder) "
                   f"[default: {_per_arch('augment', _on_off)}].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for weights, shuffling, the validation split and augmentation.")
@click.option("--validation-size", type=click.IntRange(min=0), default=None,
              help="MNIST: training images held out for validation curves (the last N); 0 "
                   f"trains on all and monitors the test set "
                   f"[default: {_per_arch('validation_size')}].")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="MNIST: train on the first N training images only (quick experiments).")
@click.option("--data", "data_path", type=click.Path(path_type=str), default=None,
              help="MNIST IDX directory, mnist.npz, or folder with train/ and test/ image folders "
                   "[default: $DIGITKIT_DATA, then the cache, then download].")
@click.option("--val-fraction", type=click.FloatRange(0, 0.5, min_open=True), default=None,
              help="Folder: the part of every class held out for validation (stratified, "
                   f"seeded) when DIR has no val/; a class needs {MIN_PER_CLASS} images "
                   f"[default: {DEFAULT_VAL_FRACTION:g}].")
@click.option("--input-size", callback=_size, default=None, metavar="HxW",
              help="Folder: the model's input size [default: from the data].")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None,
              help="Folder: 1 (gray) or 3 (RGB) [default: 1 when every file is gray].")
@click.option("--resize", type=click.Choice(list(RESIZE_MODES)), default=None,
              help="Folder: how a picture meets the input size [default: squash].")
@click.option("--weights", default=None, metavar="imagenet|none|FILE",
              help="Folder, transfer networks: the backbone's starting weights: Keras' "
                   "ImageNet download, none, or a Keras weights file of the backbone without "
                   "its top [default: imagenet].")
@click.option("--fine-tune-epochs", type=click.IntRange(min=0), default=None,
              help=f"Folder, transfer networks: epochs with the backbone unfrozen, after "
                   f"--epochs with it frozen [default: {_per_arch('fine_tune_epochs')}].")
@click.option("--flip", is_flag=True,
              help="Folder: also mirror pictures at random (off: a mirrored digit or text is "
                   "another picture).")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=str),
              default=None, help="Output directory [default: runs/<arch>].")
@click.option("--force", is_flag=True, help="Overwrite an existing model in the output directory.")
@click.option("-q", "--quiet", is_flag=True, help="No per-epoch progress.")
def command(folder, **opts):
    """Train a classifier: on MNIST digits (no DIR; model.h5), or on DIR, one subfolder
    per class (or train/ with optional val/ and test/ beside it; model.keras carrying its
    class names and preprocessing). Writes the model with train.json and its reports."""
    from digitkit.environment import require_tensorflow

    require_tensorflow("digitkit train")  # before minutes of data download, not after
    wrong = _MNIST_ONLY if folder else _FOLDER_ONLY
    for flag, name, default in wrong:
        if opts[name] != default:
            where = "MNIST (no DIR)" if folder else "a folder (digitkit train DIR)"
            raise click.UsageError(f"{flag} applies to training on {where}")
    quiet, out_dir, force = opts.pop("quiet"), opts.pop("out_dir"), opts.pop("force")
    verbose = 0 if quiet else (1 if sys.stdout.isatty() else 2)
    if folder:
        _train_folder(folder, opts, out_dir, force, verbose, quiet)
    else:
        _train_mnist(opts, out_dir, force, verbose, quiet)


def _train_mnist(opts, out_dir, force, verbose, quiet):
    from digitkit.cli.data import _progress
    from digitkit.data import load_mnist
    from digitkit.train import TrainConfig, Trainer

    data_path = opts.pop("data_path")
    for _, name, _ in _FOLDER_ONLY:
        opts.pop(name)
    config = TrainConfig(**{**opts, "arch": opts["arch"] or DEFAULT_ARCH})
    trainer = Trainer(config, out_dir or f"runs/{config.arch}", force=force, verbose=verbose)
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


def _train_folder(folder, opts, out_dir, force, verbose, quiet):
    from digitkit.train import FOLDER_ARTIFACTS, FolderConfig, FolderTrainer

    for _, name, _ in _MNIST_ONLY:
        opts.pop(name)
    opts["arch"] = opts["arch"] or DEFAULT_FOLDER_ARCH
    opts["resize"] = opts["resize"] or "squash"
    if opts["channels"] is not None:
        opts["channels"] = int(opts["channels"])
    config = FolderConfig(**opts)
    trainer = FolderTrainer(config, folder, out_dir or f"runs/{config.arch}", force=force,
                            verbose=verbose,
                            log=(lambda line: None) if quiet else click.echo,
                            warn=lambda line: click.echo(line, err=True))
    config.resolved()  # bad combinations fail before data is read
    record = trainer.fit()
    t = record["test"]
    click.echo(f"{t['split']} accuracy {t['accuracy']:.4f}, loss {t['loss']:.4f} on "
               f"{t['images']} images ({record['wall_seconds']:.1f} s); wrote "
               f"{trainer.out_dir}/{{{', '.join(FOLDER_ARTIFACTS)}}}")
