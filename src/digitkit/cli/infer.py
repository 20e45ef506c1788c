"""`digitkit infer`: classify image files in batch."""

from __future__ import annotations

import sys

import click

from digitkit.infer import DEFAULT_BATCH_SIZE, DEFAULT_ENGINE, DEFAULT_TOP_K, ENGINES


@click.command("infer")
@click.argument("model", type=click.Path(dir_okay=True, path_type=str))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Result file: CSV, or JSON Lines when it ends in .jsonl. Default: stdout.")
@click.option("--runtime", type=click.Choice(["onnxruntime", "tensorflow"]), default=None,
              help="Default: onnxruntime for .onnx, tensorflow for a SavedModel dir or .h5.")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE,
              show_default=True, help="Images per inference batch (and per decode task).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Worker processes (decode, ONNX inference, row text); 0 does everything "
                   "in the main process. Default: one per usable core (decoding is the "
                   "bottleneck).")
@click.option("--top-k", type=click.IntRange(1, 10), default=DEFAULT_TOP_K, show_default=True,
              help="Labels and probabilities per row.")
@click.option("--resume", is_flag=True,
              help="Finish an interrupted run: keep the rows in the output file, do the rest.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--confusion-matrix", "confusion", type=click.Path(dir_okay=False, path_type=str),
              default=None, help="Also write the confusion matrix of files in class folders "
                                 "(0..9): .png figure or .csv counts.")
@click.option("--engine", type=click.Choice(list(ENGINES)), default=DEFAULT_ENGINE,
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
def command(paths, output, resume, force, confusion, quiet, num_workers, **spec):
    """Classify the images in PATHS (files or folders, recursive) with MODEL.

    MODEL: a .onnx file (ONNX Runtime; TensorFlow is never imported), or a SavedModel
    directory or .h5/.keras file (TensorFlow, for comparison).

    One row per file: path, label, confidence, top-k labels and probabilities, error (empty
    on success). Files in folders named 0..9 also give an accuracy report at the end.

    \b
    Exit status: 0 all files classified; 3 some files failed (error rows written, the rest
    classified); 1 could not run; 2 usage error; 130 interrupted (--resume finishes it).
    """
    from digitkit.errors import PartialFailure, UsageError
    from digitkit.infer import InferSpec, format_summary, run_infer, save_confusion

    # **spec: the options that are InferSpec fields (model, runtime, batch_size, workers,
    # top_k, engine, address); the named ones are about the output and the report.
    to_stdout = output in (None, "-")
    if spec["engine"] == "ray":
        if spec["workers"] is not None:
            raise UsageError("--workers is for the local engine; the ray engine takes "
                             "--num-workers")
        spec["workers"] = num_workers
    elif spec["address"] is not None or num_workers is not None:
        raise UsageError("--address and --num-workers are for the ray engine (--engine ray)")
    if confusion and not force:
        from digitkit.outputs import guard_output

        guard_output(confusion, force)  # fail before hours of work, not after
    if confusion and output and confusion == output:
        raise UsageError("--confusion-matrix and --output name the same file")
    # A progress line only where a person watches it, and never interleaved with rows
    # printed to the same terminal.
    progress = not quiet and sys.stderr.isatty() and not (to_stdout and sys.stdout.isatty())
    summary = run_infer(InferSpec(**spec), paths, output, resume=resume, force=force,
                        progress=progress, warn=lambda msg: click.echo(msg, err=True))
    if confusion:
        if summary.labelled:
            save_confusion(summary, confusion, force=force)
        else:
            click.echo("warning: no files in class folders (0..9): no confusion matrix written",
                       err=True)
    if not quiet:
        # The report goes where it cannot corrupt the rows.
        click.echo(format_summary(summary), err=to_stdout)
    if summary.failed:
        raise PartialFailure(f"{summary.failed:,} of {summary.total:,} files could not be "
                             "classified (see the error column)")
