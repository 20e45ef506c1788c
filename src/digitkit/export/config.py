"""The options of one export, their defaults with the reasons for them, and their checks.

The CLI reads its defaults and choices from here to build --help, so importing this module
must stay instant: nothing here (nor in digitkit.export.formats, which names the formats)
imports TensorFlow, ONNX or numpy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from digitkit.errors import UsageError
from digitkit.export.formats import EXPORT_FORMATS, FORMATS, QUANTIZE_CHOICES
from digitkit.model.conventions import NO_FLAGS, NO_POLICY, ConventionFlags, PolicyFlags

#: ONNX opset. 17 is the newest opset every supported runtime runs (onnxruntime >= 1.13,
#: so every release our pin allows), it has LayerNormalization as a native op, and it sits in
#: the middle of tf2onnx 1.17's tested range; 18 (tf2onnx's maximum) moved the Reduce* axes
#: to inputs and buys nothing for these models.
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 13, 18  # 13: single-axis Softmax semantics; 18: tf2onnx 1.17's maximum

#: Default parity tolerance on softmax probabilities. Float32 conversions of the same graph
#: differ by ~1e-7 (different kernels, fused ops); 1e-5 leaves two orders of magnitude for
#: that while still catching a wrong op, a lost normalisation or a truncated weight.
DEFAULT_ATOL = 1e-5
#: The same default for a general image classifier (not a digit model): a deep network adds
#: float32 rounding layer after layer. Measured: MobileNetV2 at 224x224x3
#: (benchmarks/bench_realsize.py) has fp32 ONNX and LiteRT copies within 2.0-2.6e-5 of Keras,
#: every top-1 the same, so 1e-5 failed correct copies; 1e-4 leaves ~4x for that, while a
#: lost normalisation or a wrong op moves such a model's probabilities by far more.
GENERAL_ATOL = 1e-4


def default_atol(contract) -> float:
    """--atol when none is given: DEFAULT_ATOL for digit models, GENERAL_ATOL otherwise."""
    return DEFAULT_ATOL if contract.is_digit else GENERAL_ATOL

#: Relative part of the parity tolerance, as numpy.allclose has it: a copy passes where
#: |copy - reference| <= atol + rtol * |reference| for every probability. A probability near
#: 1 is where float32 rounding is largest in absolute terms (its ulp is 6e-8, and a saturated
#: softmax puts the top class there), so the bound grows with it: 1e-5 adds at most 1e-5 there
#: (~170 ulps of accumulated rounding) and leaves small probabilities at atol. Measured, every
#: adapted copy of a foreign model (Keras layers, TensorFlow ops, ONNX nodes; ONNX Runtime,
#: TensorFlow, LiteRT) sits within 1.1e-6 of its source; a lost normalisation (the issue's
#: notebook model fed raw pixels: 1.2e-4) still fails.
DEFAULT_RTOL = 1e-5

#: How many real test images the parity check runs by default (the issue asks for >= 1,000).
DEFAULT_N_IMAGES = 1000

#: Training images used to calibrate activation ranges. 1,000 images (100 per class on
#: average) give stable MinMax ranges; more only adds calibration time.
DEFAULT_CALIBRATION_IMAGES = 1000
#: ...but never more input values than this in all. ONNX Runtime's MinMax calibrator keeps
#: every intermediate output of every calibration image in memory until it computes the
#: ranges, so its memory grows with images x activations: a 224x224x3 MobileNetV2 calibrated
#: on 300 photos was killed by the kernel at 23 GB. 32 such images (~2.5 GB) still give
#: MinMax its ranges; a digit model keeps all 1,000.
MAX_CALIBRATION_VALUES = 32 * 224 * 224 * 3


def calibration_cap(values_per_image: int) -> int:
    """How many int8 calibration images an input of `values_per_image` values gets."""
    return max(1, min(DEFAULT_CALIBRATION_IMAGES, MAX_CALIBRATION_VALUES // values_per_image))

#: Largest acceptable drop in top-1 test accuracy (in percentage points) of the int8 copy
#: against the float ONNX model: beyond one point the size saving is not worth the errors.
DEFAULT_MAX_ACCURACY_DROP = 1.0

#: Without --out the export goes beside the model (<directory of MODEL>/export), so a
#: training run's directory holds its own exports.
DEFAULT_OUT_DIR_NAME = "export"

#: What --format accepts: every format of the table, alphabetically, and "all" of them.
FORMAT_CHOICES = (*sorted(FORMATS), "all")


@dataclass(frozen=True)
class ExportConfig:
    """Everything `export_model` is asked to do; checked (and `formats` normalised to the
    table's order) on construction, so an ExportConfig that exists is a valid one."""

    formats: tuple[str, ...] | str = FORMATS  # names of FORMAT_CHOICES; "all" is every one
    out_dir: str | os.PathLike | None = None  # None: <directory of the source>/export
    opset: int = DEFAULT_OPSET
    atol: float | None = None  # None: default_atol(the source's contract)
    rtol: float = DEFAULT_RTOL
    quantize: str | None = None  # one of QUANTIZE_CHOICES, or None
    data: str | os.PathLike | None = None  # MNIST location; None: digitkit's data resolution
    force: bool = False  # overwrite an existing export
    trust_model: bool = False  # load models whose layers can run arbitrary code
    n_images: int = DEFAULT_N_IMAGES
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP  # percentage points, int8 vs float
    #: How a model made elsewhere expects its input (the --input-* flags); NO_FLAGS: detected
    #: when the source does not honour digitkit's contract.
    conventions: ConventionFlags = NO_FLAGS
    #: A general image classifier's labelled folder (one subfolder per class): the parity
    #: images, the accuracy set and the int8 calibration (digitkit.export.evidence).
    calibration: str | os.PathLike | None = None
    #: A labels file naming a general model's outputs (digitkit.model.labels.read_labels).
    labels: str | os.PathLike | None = None
    #: The pixel policy flags (--input-size, --resize, ...): how files become a general
    #: model's pixels, over what it records (digitkit.model.conventions.PolicyFlags).
    policy: PolicyFlags = NO_POLICY

    def __post_init__(self):
        object.__setattr__(self, "formats", normalise_formats(self.formats))
        check_options(self)


def normalise_formats(formats) -> tuple[str, ...]:
    """The chosen formats in the order they are built and recorded; "all" is every one."""
    if isinstance(formats, str):
        formats = (formats,)
    chosen = set()
    for f in formats:
        if f == "all":
            chosen.update(FORMATS)
        elif f in FORMATS:
            chosen.add(f)
        else:
            raise UsageError(f"unknown export format {f!r}; choose from "
                             f"{', '.join(FORMAT_CHOICES)}")
    if not chosen:
        raise UsageError("no export format given")
    return tuple(f for f in FORMATS if f in chosen)


def check_options(config: ExportConfig) -> None:
    """UsageError (exit 2) for any option value or combination that cannot work."""
    if not MIN_OPSET <= int(config.opset) <= MAX_OPSET:
        raise UsageError(f"--opset {config.opset} is outside tf2onnx 1.17's range "
                         f"{MIN_OPSET}..{MAX_OPSET}")
    if config.atol is not None and not config.atol >= 0:
        raise UsageError(f"--atol must be >= 0, got {config.atol}")
    if not config.rtol >= 0:
        raise UsageError(f"--rtol must be >= 0, got {config.rtol}")
    if config.quantize is not None:
        if config.quantize not in QUANTIZE_CHOICES:
            supported = " or ".join(repr(q) for q in QUANTIZE_CHOICES)
            raise UsageError(f"--quantize {config.quantize!r}: only {supported} is supported")
        base = EXPORT_FORMATS[QUANTIZE_CHOICES[config.quantize]].made_from
        if base not in config.formats:
            raise UsageError(f"--quantize {config.quantize} quantizes the "
                             f"{EXPORT_FORMATS[base].label} copy: use --format {base} or all")
    if config.n_images < 1:
        raise UsageError(f"need at least one validation image, got {config.n_images}")
    if not config.max_accuracy_drop >= 0:
        raise UsageError(f"maximum accuracy drop must be >= 0, got {config.max_accuracy_drop}")
