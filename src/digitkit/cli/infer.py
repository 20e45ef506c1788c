"""`digitkit infer`: classify image files in batch."""

from __future__ import annotations

import os
import sys

import click

from digitkit.cli.conventions import convention_options, take_convention_flags
from digitkit.cli.options import device_option, trust_model_option
from digitkit.images import MAX_FILE_SIZE
from digitkit.infer.results.formats import RESULT_FORMATS
from digitkit.infer.spec import (
    BATCH_ENGINES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_ENGINE,
    DEFAULT_FILE_TIMEOUT,
    DEFAULT_TOP_K,
    MAX_FILE_TIMEOUT,
)
from digitkit.infer.storage.shards import DEFAULT_SHARD_FORMAT, DEFAULT_SHARD_SIZE
from digitkit.predictors.choice import ANY_PRECISION, AUTO, CHECK_IMAGES
from digitkit.predictors.serving import DEFAULT_PRECISION, precisions, serving_runtimes


class _ByteSize(click.ParamType):
    """A size in bytes: 1000000, 512K, 300M, 2G (powers of 1024; a trailing B or iB is
    fine)."""

    name = "size"
    _UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("B").removesuffix("I")
        number, unit = text.rstrip("KMGT"), text[len(text.rstrip("KMGT")):]
        try:
            size = int(float(number) * self._UNITS[unit])
        except (ValueError, KeyError, OverflowError):  # OverflowError: inf, 1e400
            self.fail(f"{value!r} is not a size (e.g. 500000, 64M, 1G; there is no "
                      "unlimited size: every file is read whole into memory)", param, ctx)
        if size < 1:
            self.fail(f"{value!r} is not a size of at least 1 byte", param, ctx)
        return size


@click.command("infer")
@click.argument("model", type=click.Path(dir_okay=True, path_type=str))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--output", default=None,
              help="Result file: CSV, JSON Lines when it ends in .jsonl, Parquet when it ends "
                   "in .parquet. Ending in '/': a shard directory (local, or an object-store "
                   "prefix like s3://bucket/results/) written by the workers of --engine ray: "
                   "one file per shard plus _manifest.json. Default: stdout.")
@click.option("--format", "fmt", type=click.Choice(list(RESULT_FORMATS)), default=None,
              help="Result format. Default: from the -o file's name; "
                   f"{DEFAULT_SHARD_FORMAT} for a shard directory.")
@click.option("--shard-size", type=click.IntRange(min=1), default=None,
              help=f"Files per shard of a shard directory. Default: {DEFAULT_SHARD_SIZE}.")
@click.option("--runtime", type=click.Choice([*serving_runtimes(), AUTO]), default=None,
              help="The runtime table's runtime that serves MODEL (OpenVINO and LiteRT: pip "
                   "install 'digitkit[runtimes]'); an export directory gives it its own copy. "
                   "auto: the fastest one (and precision, within --precision) whose labels "
                   "on check images (MNIST test images for a digit model, the --calibration "
                   "folder for any other) agree with fp32's, measured at --batch-size on this "
                   "machine (the first time: seconds for a small model, minutes for a "
                   "224x224 one on few cores; then cached); the choice and its figures are "
                   "said on stderr and recorded with the results. "
                   "Default: onnxruntime for .onnx or an export directory, tensorflow for a "
                   "SavedModel dir or .h5, litert for .tflite.")
@click.option("--precision", type=click.Choice([*precisions(), ANY_PRECISION]),
              default=DEFAULT_PRECISION, show_default=True,
              help="What the runtime computes in: int8 runs the int8 ONNX copy "
                   "(model.int8.onnx), bf16 needs a CPU with native bf16 (openvino); any "
                   "(with --runtime auto): whichever passes its gate fastest.")
@click.option("--calibration", type=click.Path(path_type=str), default=None, metavar="DIR",
              help="A general image classifier's labelled folder (one subfolder per class, "
                   "matched to its class names): the check images --runtime auto holds every "
                   f"copy to (at most {CHECK_IMAGES:,}, spread over the classes) [default: the "
                   "folder its export.json records, while it is there]; for a model made "
                   "elsewhere, also what its preprocessing is detected on, as export detects it.")
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE,
              show_default=True,
              help="Images per inference batch (a local worker takes a few per task).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Worker processes (decode, inference, row text); 0 does everything "
                   "in the main process. Default: one per usable core (decoding is the "
                   "bottleneck).")
@click.option("--top-k", type=click.IntRange(1, 10), default=DEFAULT_TOP_K, show_default=True,
              help="Labels and probabilities per row.")
@click.option("--max-file-size", type=_ByteSize(), default=MAX_FILE_SIZE, metavar="SIZE",
              help="Larger files get an error row without being read (e.g. 64M, 1G). "
                   f"Default: {MAX_FILE_SIZE // 2**20}M.")
@click.option("--file-timeout", type=click.FloatRange(min=0), default=DEFAULT_FILE_TIMEOUT,
              show_default=True, metavar="SECONDS",
              help="A file whose decoding takes longer gets an error row and its worker is "
                   f"replaced; 0: no limit (the only way to say so; at most "
                   f"{MAX_FILE_TIMEOUT:,.0f} otherwise). (--workers 0 runs have none.)")
@click.option("--resume", is_flag=True,
              help="Finish an interrupted run: keep the rows in the output file (the shards "
                   "of a shard directory), do the rest.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--confusion-matrix", "confusion", type=click.Path(dir_okay=False, path_type=str),
              default=None, help="Also write the confusion matrix of files in class folders "
                                 "(named like the model's classes: 0..9 for digits): .png "
                                 "figure or .csv counts.")
@click.option("--engine", type=click.Choice(list(BATCH_ENGINES)), default=DEFAULT_ENGINE,
              show_default=True,
              help="Where the work runs: local processes, or a Ray cluster "
                   "(pip install 'digitkit[ray]').")
@click.option("--address", default=None, metavar="auto|ray://HOST:PORT",
              help="Ray cluster to run on (--engine ray): 'auto' joins the cluster this "
                   "machine belongs to, ray://HOST:PORT connects through Ray Client. "
                   "Default: a local Ray instance on this machine.")
@click.option("--num-workers", type=click.IntRange(min=1), default=None,
              help="Ray actors, one CPU each (--engine ray). Default: one per CPU of the "
                   "cluster.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress bar and no summary; warnings about bad files still go to stderr.")
@click.option("--data", default=None, type=click.Path(path_type=str),
              help="MNIST location (IDX directory or mnist.npz) for detecting the input "
                   "convention of a model made elsewhere. [default: standard resolution]")
@convention_options
@trust_model_option
def command(paths, output, resume, force, confusion, quiet, num_workers, shard_size, **spec):
    """Classify the images in PATHS (files or folders, recursive) with MODEL.

    MODEL: a .onnx file (ONNX Runtime; TensorFlow is never imported), a digitkit export
    directory (each --runtime takes its own copy), a .tflite file, or a SavedModel
    directory or .h5/.keras file (TensorFlow, for comparison). A model made elsewhere
    runs through digitkit's adapter, its input convention detected on MNIST test images
    (said once on stderr) or declared with the --input-* flags.

    Any image classifier whose copy carries digitkit's contract (an export directory, an
    ONNX copy's metadata, a Keras file's record) runs with no flags: files are decoded by
    its pixel policy and rows carry its class names.

    One row per file: path, label (the class name; digits for a digit model), confidence,
    top-k labels and probabilities, error (empty on success). Files in folders named like
    a class (0..9 for digits) also give an accuracy report at the end.

    \b
    Exit status: 0 all files classified; 3 some files failed (error rows written, the rest
    classified); 1 could not run; 2 usage error; 130 interrupted (--resume finishes it).
    """
    from digitkit.errors import PartialFailure, UsageError
    from digitkit.infer import InferSpec, format_summary, run_infer, save_confusion
    from digitkit.infer.storage.shards import ShardOutput, is_shard_output

    # **spec: the options that are InferSpec fields (model, runtime, batch_size, workers,
    # top_k, engine, address); the named ones are about the output and the report.
    to_stdout = output in (None, "-")
    from digitkit.infer.spec import InputLimits

    spec["limits"] = InputLimits(spec.pop("max_file_size"), spec.pop("file_timeout") or None)
    flags, data = take_convention_flags(spec), spec.pop("data")
    if is_shard_output(output or ""):
        output = ShardOutput(output, shard_size or DEFAULT_SHARD_SIZE)
    elif shard_size is not None:
        raise UsageError("--shard-size is for a shard directory (-o DIR/)")
    elif output and os.path.isdir(output):
        raise UsageError(f"{output} is a directory: end it with '/' for a shard directory "
                         "(--engine ray), or name a file")
    if spec["engine"] == "ray":
        if spec["workers"] is not None:
            raise UsageError("--workers is for the local engine; the ray engine takes "
                             "--num-workers")
        spec["workers"] = num_workers
    elif spec["address"] is not None or num_workers is not None:
        raise UsageError("--address and --num-workers are for the ray engine (--engine ray)")
    if confusion and not force:
        from digitkit.artifacts import guard_output

        guard_output(confusion, force)  # fail before hours of work, not after
    if confusion and output and confusion == str(output):
        raise UsageError("--confusion-matrix and --output name the same file")
    spec.update(convention=flags, data=data)
    # A progress line only where a person watches it, and never interleaved with rows
    # printed to the same terminal.
    progress = not quiet and sys.stderr.isatty() and not (to_stdout and sys.stdout.isatty())
    summary = run_infer(InferSpec(**spec), paths, output, resume=resume, force=force,
                        progress=progress, warn=lambda msg: click.echo(msg, err=True))
    if confusion:
        if summary.labelled:
            save_confusion(summary, confusion, force=force)
        else:
            folders = ("0..9" if summary.class_names is None
                       else "named like the model's classes")
            click.echo(f"warning: no files in class folders ({folders}): no confusion matrix "
                       "written", err=True)
    if not quiet:
        # The report goes where it cannot corrupt the rows.
        click.echo(format_summary(summary), err=to_stdout)
    if summary.failed:
        raise PartialFailure(f"{summary.failed:,} of {summary.total:,} files could not be "
                             "classified (see the error column)")
