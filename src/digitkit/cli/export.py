"""`digitkit export`: thin option parsing over digitkit.export.export_model."""

from __future__ import annotations

import click

from digitkit.cli.conventions import (
    convention_options,
    policy_options,
    take_convention_flags,
    take_policy_flags,
)
from digitkit.cli.options import trust_model_option
from digitkit.export.config import (
    DEFAULT_ATOL,
    DEFAULT_MAX_ACCURACY_DROP,
    DEFAULT_N_IMAGES,
    DEFAULT_OPSET,
    DEFAULT_OUT_DIR_NAME,
    DEFAULT_RTOL,
    FORMAT_CHOICES,
    GENERAL_ATOL,
    MAX_OPSET,
    MIN_OPSET,
    QUANTIZE_CHOICES,
    ExportConfig,
)
from digitkit.model.files import INT8_FILE, ONNX_FILE


@click.command()
@click.argument("model", type=click.Path(dir_okay=True, path_type=str))
@click.option("--format", "formats", type=click.Choice(FORMAT_CHOICES),
              default="all", show_default=True,
              help="What to produce; 'all' is every format, the layout `digitkit bench` "
                   "expects.")
@click.option("--out", "out_dir", type=click.Path(path_type=str), default=None,
              help=f"Export directory.  [default: <directory of MODEL>/{DEFAULT_OUT_DIR_NAME}]")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True,
              help=f"ONNX opset ({MIN_OPSET}..{MAX_OPSET}). {DEFAULT_OPSET}: newest opset every "
                   "onnxruntime >= 1.13 runs, native LayerNormalization, well inside tf2onnx "
                   "1.17's tested range.")
@click.option("--quantize", type=click.Choice(list(QUANTIZE_CHOICES)), default=None,
              help=f"Also write {INT8_FILE}, calibrated on MNIST training images (a general "
                   "model: on --calibration).")
@click.option("--max-accuracy-drop", type=float, default=DEFAULT_MAX_ACCURACY_DROP,
              show_default=True,
              help="Percentage points of test accuracy the int8 copy may lose.")
@click.option("--atol", type=float, default=None,
              help="Absolute part of the parity tolerance: |copy - source| <= atol + rtol * "
                   f"|source| for every output probability. [default: {DEFAULT_ATOL} for a "
                   f"digit model, {GENERAL_ATOL} for any other image classifier (deeper "
                   "networks round more)]")
@click.option("--rtol", type=float, default=DEFAULT_RTOL, show_default=True,
              help="Relative part of the parity tolerance (as numpy.allclose).")
@click.option("--images", "n_images", type=int, default=DEFAULT_N_IMAGES, show_default=True,
              help="Real images used by the parity check: MNIST test images (a general "
                   "model: its --calibration images).")
@click.option("--data", type=click.Path(path_type=str), default=None,
              help="MNIST location (IDX directory or mnist.npz); default: digitkit's data "
                   "resolution ($DIGITKIT_DATA, cache, download).")
@click.option("--calibration", type=click.Path(path_type=str), default=None, metavar="DIR",
              help="A general image classifier's labelled folder (one subfolder per class, "
                   "matched to its class names): parity images, accuracy lines and int8 "
                   "calibration. [default: seeded random pixels, no accuracy lines]")
@click.option("--labels", type=click.Path(path_type=str), default=None, metavar="FILE",
              help="Class names of a general model that carries none: one per line in "
                   "output order, or a JSON list. [default: the model's own, else the "
                   "--calibration folder's subfolders, else 0..K-1]")
@click.option("--view", is_flag=True, help="Open the validated ONNX model in Netron.")
@click.option("--port", type=int, default=None, help="Netron port for --view.")
@click.option("--no-browser", is_flag=True, help="With --view: print the URL only.")
@click.option("--force", is_flag=True, help="Overwrite an existing export.")
@trust_model_option
@convention_options
@policy_options
def command(model, view, port, no_browser, **options):
    """Export MODEL to SavedModel, ONNX and LiteRT, each copy validated against MODEL.

    \b
    Every copy is checked on real MNIST test images plus edge inputs (all zeros,
    all 255, batch of 1, odd batch); results, sizes and sha256 checksums go to
    export.json beside the artifacts; the LiteRT copy is also held to the
    Keras model's accuracy on the whole MNIST test set. A copy that fails is moved aside as
    <name>.FAILED and the command exits 4.

    \b
    A general image classifier (input "pixels" (N,H,W,C), C 1 or 3, raw 0..255, output
    "probabilities" (N,K)) is validated on its --calibration folder and seeded random
    pixels instead; every copy carries its contract (class names, input size, pixel
    policy), so it needs no flags afterwards.

    \b
    MODEL may be made anywhere: a Keras .h5 (Keras 3 or tf.keras 2), a .keras file, a
    SavedModel directory or an .onnx file. Unless it takes raw pixels itself, its input
    convention is detected (a digit model on MNIST test images, a general one on
    --calibration; the evidence is printed) or declared with the --input-*, --channel-order
    and --preprocess flags, and every copy wraps it in an adapter that takes raw pixels
    0..255 and returns probabilities, validated against MODEL run on its own convention.
    An .onnx MODEL becomes ONNX copies only.
    """
    if view and options["formats"] == "savedmodel":
        raise click.UsageError("--view opens the ONNX result: use --format onnx or all")
    from digitkit.export import export_model

    flags = take_convention_flags(options)
    policy = take_policy_flags(options)
    manifest = export_model(model, ExportConfig(conventions=flags, policy=policy, **options),
                            echo=click.echo)
    click.echo(f"export ok: {manifest['export_dir']} ({manifest['seconds']:.1f} s)")
    if view:
        from pathlib import Path

        from digitkit.view import view_until_interrupted

        view_until_interrupted(Path(manifest["export_dir"]) / ONNX_FILE, port=port,
                               browse=not no_browser, echo=click.echo)
