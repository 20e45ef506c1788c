"""`digitkit bench`: throughput, latency and accuracy of every runtime a model deploys to."""

from __future__ import annotations

import click

from digitkit.bench.config import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_CHECK_IMAGES,
    DEFAULT_DURATION,
    DEFAULT_ORT_SPINNING,
    DEFAULT_REPEAT,
    DEFAULT_RUNTIMES,
    DEFAULT_WARMUP,
)
from digitkit.cli.conventions import convention_options, take_convention_flags
from digitkit.cli.options import device_option, trust_model_option


@click.command("bench")
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option("--runtimes", default=None, metavar="LIST",
              help=f"Comma-separated runtime groups ({', '.join(DEFAULT_RUNTIMES)}) or single "
                   "engines as the results name them (onnxruntime-int8, openvino-bf16, ...). "
                   "[default: every runtime whose model copy exists and that is installed]")
@click.option("--batch-sizes", default=None, metavar="LIST",
              help="Comma-separated batch sizes. "
                   f"[default: {','.join(map(str, DEFAULT_BATCH_SIZES))}]")
@click.option("--threads", type=int, default=None,
              help="Threads for every runtime alike (ONNX Runtime's per batch size within "
                   "them, as `digitkit infer` runs). [default: CPUs this process may use]")
@device_option
@click.option("--duration", type=float, default=None, metavar="S",
              help="Seconds of timed calls per runtime and batch size. "
                   f"[default: {DEFAULT_DURATION:g}]")
@click.option("--iterations", type=int, default=None, metavar="N",
              help="Exact number of timed calls per batch size (instead of --duration).")
@click.option("--warmup", type=int, default=DEFAULT_WARMUP, show_default=True, metavar="N",
              help="Untimed calls per batch size before timing.")
@click.option("--repeat", type=int, default=DEFAULT_REPEAT, show_default=True, metavar="R",
              help="Run every runtime R times round robin and keep the best round per batch "
                   "size (steadier figures on a shared machine).")
@click.option("--ort-spinning/--no-ort-spinning", default=DEFAULT_ORT_SPINNING,
              help="Pin ONNX Runtime's spinning (idle threads busy-wait between ops) with "
                   "--threads threads for every batch size. [default: "
                   + ("threads and spinning per batch size, as `digitkit infer` runs them"
                      if DEFAULT_ORT_SPINNING is None else str(DEFAULT_ORT_SPINNING)) + "]")
@click.option("--images", "images", multiple=True, type=click.Path(path_type=str),
              metavar="DIR", help="Also measure end to end over these image files or folders "
                                  "(decode and preprocess, then infer). Repeatable.")
@click.option("--data", default=None, type=click.Path(path_type=str),
              help="MNIST location (IDX directory or mnist.npz). [default: standard resolution]")
@click.option("--check-images", type=int, default=DEFAULT_CHECK_IMAGES, show_default=True,
              metavar="N",
              help="Test images every runtime classifies for the top-1 cross-check.")
@click.option("--json", "json_out", default=None, type=click.Path(path_type=str),
              metavar="OUT", help="Write the full record (results and environment) as JSON.")
@click.option("--plot", "plot_out", default=None, type=click.Path(path_type=str),
              metavar="OUT.png", help="Write a PNG of throughput against batch size.")
@click.option("--force", is_flag=True, help="Overwrite existing --json/--plot files.")
@convention_options
@trust_model_option
def command(json_out, plot_out, force, **opts):
    """Benchmark MODEL (an export directory, or its individual files) on every runtime.

    \b
    Each runtime runs in its own process with the same threads and the same MNIST test
    images; every row states its precision, size, load time and accuracy on the test
    images. Results are cross-checked (top-1 agreement with the Keras reference) and a
    runtime that disagrees is flagged, not crowned. Exit status 4 when one is flagged.
    OpenVINO and LiteRT need pip install 'digitkit[runtimes]'; without it their rows
    say "not installed".

    \b
    A model file made elsewhere runs through digitkit's adapter, its input convention
    detected on MNIST test images (said once on stderr) or declared with --input-*.
    """
    import sys

    from digitkit import bench
    from digitkit.artifacts import guard_output, write_json_atomic
    from digitkit.errors import UsageError, ValidationError

    if plot_out is not None and not plot_out.lower().endswith(".png"):
        raise UsageError(f"--plot: {plot_out}: expected a .png file name")
    for out in (json_out, plot_out):
        if out is not None:
            guard_output(out, force)
    flags = take_convention_flags(opts)
    config = bench.BenchConfig(**dict(opts, images=opts["images"] or None))

    def progress(msg):
        click.echo(f"bench: {msg}", err=True)

    def warn(msg):
        click.echo(f"digitkit: note: {msg}", err=True)

    argv = (sys.argv if sys.argv and "digitkit" in sys.argv[0]
            else ["digitkit", "bench", *opts["models"]])
    record = bench.run_bench(config, progress=progress, warn=warn,
                             command=bench.command_line(argv), conventions=flags)
    click.echo(bench.format_record(record))
    if json_out:
        write_json_atomic(json_out, record)
        click.echo(f"wrote {json_out}", err=True)
    if plot_out:
        bench.save_plot(record, plot_out)
        click.echo(f"wrote {plot_out}", err=True)
    if bench.any_flagged(record):
        raise ValidationError("a runtime disagrees with the reference (see FLAGGED above)")
