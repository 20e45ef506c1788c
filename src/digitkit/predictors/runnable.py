"""What a command runs for a MODEL argument: the file itself, or its adapted copy.

`infer`, `bench` and `view` never run a model made elsewhere on pixels it was not trained
for. `runnable_model` decides once, in the main process:
- a file that honours digitkit's contract (digitkit's own models and exports) or carries the
  convention metadata of digitkit's adapter runs as it is: nothing loaded, no data needed;
- otherwise the input convention is resolved (digitkit.model.resolve.resolve_convention:
  declared by the --input-* flags, or detected on labelled MNIST test images, loaded the
  way every command loads them) and the adapted copy (predictors.adapted.adapted_copy) is
  what runs, on every engine and in every worker process.

The contract the model is run under (`model_contract`: its class names, input size, channels
and pixel policy) is read here too, once, from what the model carries: an export directory's
export.json "model", an ONNX copy's metadata_props (read without onnx), the record a Keras
file or SavedModel embeds (`digitkit.model.embedded`); it travels with the Runnable to the
local workers and the Ray actors, which decode every file by it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from digitkit.errors import ModelError, UsageError
from digitkit.model.contract import (
    DIGIT_CONTRACT,
    PIXEL_POLICY_KEY,
    ModelContract,
    contract_from_metadata,
    contract_from_record,
    default_class_names,
    image_contract,
)
from digitkit.model.conventions import FLAG_NAMES, NO_FLAGS, ConventionFlags, InputConvention
from digitkit.model.files import (
    MANIFEST,
    ONNX,
    TFLITE,
    ModelCopies,
    identify,
    is_export_dir,
    read_export_dir,
)


@dataclass(frozen=True)
class Runnable:
    """path: what to run. convention: the source's input convention (None: digitkit's
    contract). detection: how it was resolved here (None: nothing was resolved)."""

    path: Path
    source: Path
    convention: InputConvention | None = None
    detection: object = None  # digitkit.model.detect.Detection
    #: what it is run under: the files' pipeline, input shape and class names
    contract: ModelContract = DIGIT_CONTRACT

    @property
    def adapted(self) -> bool:
        return self.path != self.source

    def line(self) -> str | None:
        """What to tell the user once (None: a contract model, nothing to say)."""
        d = self.detection
        if d is None or d.how == "contract":
            return None
        on = f" on {d.images:,} {d.data}" if d.scores else ""
        return (f"{self.source.name}: {d.summary()}{on}; running it through digitkit's "
                f"adapter ({d.convention.describe(full=True)})")


def runnable_model(path: str | os.PathLike, flags: ConventionFlags = NO_FLAGS,
                   data: str | os.PathLike | None = None,
                   trust_model: bool = False,
                   calibration: str | os.PathLike | None = None) -> Runnable:
    """What to run for `path` (see the module docstring). `data`: the MNIST location for
    detection (None: digitkit.data's resolution); loaded only for a digit model made
    elsewhere. `calibration`: a labelled folder (--calibration DIR) a general classifier made
    elsewhere is detected on, as export detects it; used only for such a model."""
    from digitkit.predictors.adapted import FOREIGN, contract_status

    model = identify(path)
    if model.kind == TFLITE:
        if flags.given:
            raise UsageError(f"{model.path}: {', '.join(flags.given)}: a LiteRT copy comes from "
                             "`digitkit export` and honours digitkit's contract; the input flags "
                             "are for models made elsewhere")
        return Runnable(model.path, model.path, contract=model_contract(model.path))
    if not flags.given:
        carried = carried_contract(model.path)
        if carried is not None and not carried.is_digit and not _needs_status(model.path):
            # A general classifier's copy carrying its contract takes raw pixels: it runs as
            # it is, under the contract it carries.
            return Runnable(model.path, model.path, contract=carried)
        status, recorded = contract_status(model.path, trust_model)
        if status != FOREIGN:
            contract = carried or (recorded.contract if recorded is not None else DIGIT_CONTRACT)
            return Runnable(model.path, model.path, recorded, contract=contract)
    return _adapt(model.path, flags, data, trust_model, calibration)


# ------------------------------------------------------------------------ the contract


def model_contract(path: str | os.PathLike) -> ModelContract:
    """The contract `path` (a model file, a SavedModel or an export directory) is run under:
    what it carries (`carried_contract`), else digitkit's digit contract (every model
    digitkit wrote before contracts were recorded was a digit model)."""
    return carried_contract(path) or DIGIT_CONTRACT


def carried_contract(path: str | os.PathLike) -> ModelContract | None:
    """The contract a model carries, read without running it (None: it records none):
    an export directory's export.json "model"; an .onnx file's metadata_props, or, without
    them, its ends when they present a general contract by name (input "pixels" (N,H,W,C),
    C 1 or 3, output "probabilities" (N,K): classes named "0".."K-1"); the record a Keras
    file or SavedModel embeds (`digitkit.model.embedded`); for a copy inside an export
    directory, that directory's export.json."""
    p = Path(path)
    if is_export_dir(p):
        copies = read_export_dir(p)
        record = copies.manifest.get("model")
        return contract_from_record(record, str(p / MANIFEST)) if record else None
    model = identify(p)
    found = _onnx_contract(model.path) if model.kind == ONNX else _embedded(model.path)
    if found is None and (model.path.parent / MANIFEST).is_file():
        record = read_export_dir(model.path.parent).manifest.get("model")
        if record:
            found = contract_from_record(record, str(model.path.parent / MANIFEST))
    return found


def _embedded(path: Path) -> ModelContract | None:
    from digitkit.model.embedded import read_contract

    return read_contract(path)


def _onnx_contract(path: Path) -> ModelContract | None:
    from digitkit.model.onnx_ends import read_ends

    ends = read_ends(path)
    if ends is None:
        return None
    try:
        found = contract_from_metadata(ends.metadata, str(path))
    except ModelError:
        if PIXEL_POLICY_KEY in ends.metadata:
            raise  # digitkit's general record, damaged: say so
        found = None  # another tool's keys of the same names: not ours
    if found is not None:
        return found
    if len(ends.inputs) != 1:
        return None
    (name, dims), out = ends.inputs[0], dict(ends.outputs)
    k = (out.get(DIGIT_CONTRACT.output_name) or (None, None))[-1]
    if (name != DIGIT_CONTRACT.input_name or len(dims) != 4 or dims[3] not in (1, 3)
            or not all(isinstance(d, int) and d > 0 for d in dims[1:])
            or not isinstance(k, int) or k < 2):
        return None
    return image_contract(dims[1], dims[2], dims[3], default_class_names(k))


def _needs_status(path: Path) -> bool:
    """Whether a model carrying a general contract also records a convention (an adapted
    ONNX copy, read for its record; a Keras file trained on other pixels, to be adapted)."""
    if identify(path).kind == ONNX:
        from digitkit.model.adapters import CONVENTION_KEY
        from digitkit.model.onnx_ends import read_metadata

        return CONVENTION_KEY in (read_metadata(path) or {})
    from digitkit.model.embedded import read_record

    return bool((read_record(path) or {}).get("convention"))


def runnable_path(path: str | os.PathLike, flags: ConventionFlags = NO_FLAGS,
                  data: str | os.PathLike | None = None,
                  say: Callable[[str], None] = lambda line: None,
                  trust_model: bool = False, calibration=None) -> Path:
    """runnable_model's path, telling `say` (once) what was resolved."""
    run = runnable_model(path, flags, data, trust_model, calibration)
    if run.line():
        say(run.line())
    return run.path


def _adapt(path: Path, flags: ConventionFlags, data, trust_model: bool,
           calibration=None) -> Runnable:
    from digitkit.model.detect import CONTRACT
    from digitkit.model.resolve import resolve_convention
    from digitkit.predictors.adapted import adapted_copy, load_source

    loaded = load_source(path, trust_model, calibration=calibration)
    if loaded.source.contract.is_digit:
        images, labels = _mnist_test(path, flags, data)
        name = None
    else:
        # A general classifier is never detected on MNIST: on its labelled folder, as export
        # detects it, or (declared, or preparing its own pixels) on nothing; without either
        # the model layer refuses in one line naming --calibration and the flags.
        images, labels, name = _calibration_images(loaded.source.contract, calibration)
    detection = resolve_convention(loaded.source, images, labels, flags, data=name)
    contract = detection.convention.contract
    if detection.how == CONTRACT:
        return Runnable(path, path, None, detection, contract)
    return Runnable(adapted_copy(loaded, detection.convention), path, detection.convention,
                    detection, contract)


def _calibration_images(contract: ModelContract, calibration):
    """(pixels, labels, "calibration images in DIR") of a --calibration folder, decoded as
    export decodes it, at most the images detection scores, spread over the classes;
    (None, None, None) without one."""
    if calibration is None:
        return None, None, None
    from digitkit.model.detect import DEFAULT_DETECTION_IMAGES, calibration_data, load_calibration

    found = load_calibration(contract, calibration,
                             -(-DEFAULT_DETECTION_IMAGES // contract.num_classes))
    return found.pixels, found.labels, calibration_data(found)


#: Stand-in images when a declared convention is run without MNIST at hand: what the model
#: outputs (probabilities or logits) is read off them; nothing is scored.
_STAND_IN_IMAGES = 64


def _mnist_test(path: Path, flags: ConventionFlags, data,
                contract: ModelContract = DIGIT_CONTRACT):
    """(MNIST test images, labels) for resolving `path`'s convention. Detection needs them;
    a declared convention only measures its accuracy on them when MNIST is at hand without a
    download (--data, $DIGITKIT_DATA or the cache), else reads the outputs off stand-ins."""
    from digitkit.data import load_mnist
    from digitkit.errors import DataError

    try:
        mnist = load_mnist(data, download=not flags.declared or data is not None)
        return mnist.x_test, mnist.y_test
    except DataError as err:
        if flags.declared and data is None:
            import numpy as np

            rng = np.random.default_rng(0)
            return rng.integers(0, 256, (_STAND_IN_IMAGES, *contract.pixels_shape)
                                ).astype(np.float32), None
        raise DataError(err.path, f"{err.reason} (detecting the input convention of {path.name} "
                        "needs MNIST test images: give --data, or declare the convention with "
                        f"{FLAG_NAMES['scale']})") from err


def recorded_copy(path: str | os.PathLike, convention: InputConvention,
                  trust_model: bool = False) -> Path:
    """The adapted copy of a source whose convention is already known (an export directory's
    source copy, its convention in export.json): no detection, no data."""
    from digitkit.predictors.adapted import adapted_copy, load_source

    return adapted_copy(load_source(path, trust_model), convention)


def runnable_copies(models: list[ModelCopies], args: Iterable[str | os.PathLike],
                    flags: ConventionFlags = NO_FLAGS, data=None,
                    say: Callable[[str], None] = lambda line: None,
                    trust_model: bool = False, calibration=None) -> None:
    """Point every copy of `models` (bench's MODEL arguments, resolved) at what should run:
    a loose file given in `args` through runnable_model; the source copy of an export made
    from a foreign model (export.json records its convention) through its adapter. Export
    directories of digitkit's own models are left as they are."""
    loose = {}
    for raw in args:
        if not is_export_dir(raw):
            loose[Path(raw)] = None
    if flags.given and not loose:
        raise UsageError(f"{', '.join(flags.given)}: the input flags are for model files made "
                         "elsewhere; an export directory's copies honour digitkit's contract")
    for m in models:
        recorded = (m.manifest.get("source") or {}).get("convention")
        for attr in ModelCopies.COPIES:
            p = getattr(m, attr)
            if p is None:
                continue
            if Path(p) in loose:
                setattr(m, attr, runnable_path(p, flags, data, say, trust_model, calibration))
            elif attr == "keras" and recorded:
                setattr(m, attr, recorded_copy(p, InputConvention.from_dict(recorded),
                                               trust_model))


def describe_flags(flags: ConventionFlags) -> str:
    """The flags as given, for messages ("--input-scale unit --ink black-on-white")."""
    keys = {v: k for k, v in FLAG_NAMES.items()}
    return " ".join(f"{f} {getattr(flags, keys[f])}" for f in flags.given)


__all__ = ["Runnable", "carried_contract", "describe_flags", "model_contract", "recorded_copy",
           "runnable_copies", "runnable_model", "runnable_path"]
