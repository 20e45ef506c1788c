"""`digitkit export`: thin option parsing over digitkit.export.export_model."""

from __future__ import annotations

import click

from digitkit.cli.conventions import convention_options, take_convention_flags
from digitkit.cli.options import trust_model_option
from digitkit.export.config import (
    DEFAULT_ATOL,
    DEFAULT_MAX_ACCURACY_DROP,
    DEFAULT_N_IMAGES,
    DEFAULT_OPSET,
    DEFAULT_OUT_DIR_NAME,
    DEFAULT_RTOL,
    FORMAT_CHOICES,
    MAX_OPSET,
    MIN_OPSET,
    QUANTIZE_CHOICES,
    ExportConfig,
)
from digitkit.model.files import INT8_FILE, ONNX_FILE

# The pixel-policy flags of a general image classifier. They belong in cli/conventions.py's
# shared decorator (every command that reads files for a model takes them); they live here
# until that decorator has them, as one decorator and one parser so that moving them is a
# cut and paste. The choices are checked by the parser against digitkit.images.resize's
# tables (importing them here would import numpy for --help); the metavars name them for
# people, and tests/test_export_general.py holds the two equal.
RESIZE_METAVAR = "[squash|center-crop|letterbox]"
INTERPOLATION_METAVAR = "[bilinear|bicubic|area]"
_POLICY_KEYS = ("input_size", "resize", "crop_fraction", "pad", "interpolation")
_POLICY_FLAGS = (
    click.option("--input-size", "input_size", default=None, metavar="HxW",
                 help="A general model's input height and width, for a model whose input "
                 "size is dynamic. [default: the model's own]"),
    click.option("--resize", default=None, metavar=RESIZE_METAVAR,
                 help="How a file is fitted to the model's input. [default: the model's "
                 "record, else squash]"),
    click.option("--crop-fraction", "crop_fraction", type=float, default=None,
                 help="With --resize center-crop: the centred part kept (0 < F <= 1)."),
    click.option("--pad", default=None, metavar="R,G,B",
                 help="With --resize letterbox: the pad colour (or one gray level)."),
    click.option("--interpolation", default=None, metavar=INTERPOLATION_METAVAR,
                 help="Resampling filter. [default: the model's record, else bilinear]"),
)


def pixel_policy_options(command):
    for option in reversed(_POLICY_FLAGS):
        command = option(command)
    return command


def take_pixel_policy_flags(options: dict) -> dict:
    """The PixelPolicy fields the flags set (removed from **options), parsed; UsageError for
    a malformed value (the policy itself checks the ranges)."""
    from digitkit.images.resize import INTERPOLATIONS, RESIZE_MODES

    flags = {k: options.pop(k, None) for k in _POLICY_KEYS}
    for key, choices in (("resize", RESIZE_MODES), ("interpolation", INTERPOLATIONS)):
        if flags[key] is not None and flags[key] not in choices:
            raise click.UsageError(f"--{key} {flags[key]!r}: choose from "
                                   f"{', '.join(choices)}")
    out = {k: v for k, v in flags.items() if v is not None and k not in ("input_size", "pad")}
    if flags["input_size"] is not None:
        out["size"] = _ints("--input-size", flags["input_size"], "x", 2)
    if flags["pad"] is not None:
        pad = _ints("--pad", flags["pad"], ",", (1, 3))
        out["pad"] = pad[0] if len(pad) == 1 else pad
    return out


def _ints(flag: str, text: str, sep: str, count) -> tuple[int, ...]:
    counts = count if isinstance(count, tuple) else (count,)
    parts = text.lower().replace(" ", "").split(sep)
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) not in counts:
        want = "HxW, e.g. 224x224" if sep == "x" else "R,G,B or one gray level, e.g. 114,114,114"
        raise click.UsageError(f"{flag} {text!r}: expected {want}")
    return values


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
@click.option("--atol", type=float, default=DEFAULT_ATOL, show_default=True,
              help="Absolute part of the parity tolerance: |copy - source| <= atol + rtol * "
                   "|source| for every output probability.")
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
@pixel_policy_options
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
    SavedModel directory or an .onnx file. Unless it is one of digitkit's own, its input
    convention is detected on MNIST test images (the evidence is printed) or declared with
    the --input-* flags, and every copy wraps it in an adapter that takes raw pixels
    (N,28,28) 0..255 and returns probabilities, validated against MODEL run on its own
    convention. An .onnx MODEL becomes ONNX copies only.
    """
    if view and options["formats"] == "savedmodel":
        raise click.UsageError("--view opens the ONNX result: use --format onnx or all")
    from digitkit.export import export_model

    flags = take_convention_flags(options)
    pixel_flags = take_pixel_policy_flags(options)
    manifest = export_model(model, ExportConfig(conventions=flags, pixel_flags=pixel_flags,
                                                **options), echo=click.echo)
    click.echo(f"export ok: {manifest['export_dir']} ({manifest['seconds']:.1f} s)")
    if view:
        from pathlib import Path

        from digitkit.view import view_until_interrupted

        view_until_interrupted(Path(manifest["export_dir"]) / ONNX_FILE, port=port,
                               browse=not no_browser, echo=click.echo)
