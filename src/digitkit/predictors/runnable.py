"""What a command runs for a MODEL argument: the file itself, or its adapted copy.

`infer`, `bench` and `view` never run a model made elsewhere on pixels it was not trained
for. `runnable_model` decides once, in the main process:
- a file that honours digitkit's contract (digitkit's own models and exports) or carries the
  convention metadata of digitkit's adapter runs as it is: nothing loaded, no data needed;
- otherwise the input convention is resolved (digitkit.model.detect.resolve_convention:
  declared by the --input-* flags, or detected on labelled MNIST test images, loaded the
  way every command loads them) and the adapted copy (predictors.adapted.adapted_copy) is
  what runs, on every engine and in every worker process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from digitkit.errors import UsageError
from digitkit.model.conventions import FLAG_NAMES, NO_FLAGS, ConventionFlags, InputConvention
from digitkit.model.files import TFLITE, ModelCopies, identify, is_export_dir


@dataclass(frozen=True)
class Runnable:
    """path: what to run. convention: the source's input convention (None: digitkit's
    contract). detection: how it was resolved here (None: nothing was resolved)."""

    path: Path
    source: Path
    convention: InputConvention | None = None
    detection: object = None  # digitkit.model.detect.Detection

    @property
    def adapted(self) -> bool:
        return self.path != self.source

    def line(self) -> str | None:
        """What to tell the user once (None: a contract model, nothing to say)."""
        d = self.detection
        if d is None or d.how == "contract":
            return None
        on = f" on {d.images:,} MNIST test images" if d.scores else ""
        return (f"{self.source.name}: {d.summary()}{on}; running it through digitkit's "
                f"adapter ({d.convention.describe(full=True)})")


def runnable_model(path: str | os.PathLike, flags: ConventionFlags = NO_FLAGS,
                   data: str | os.PathLike | None = None,
                   trust_model: bool = False) -> Runnable:
    """What to run for `path` (see the module docstring). `data`: the MNIST location for
    detection (None: digitkit.data's resolution); loaded only for a model made elsewhere."""
    from digitkit.predictors.adapted import FOREIGN, contract_status

    model = identify(path)
    if model.kind == TFLITE:
        if flags.given:
            raise UsageError(f"{model.path}: {', '.join(flags.given)}: a LiteRT copy comes from "
                             "`digitkit export` and honours digitkit's contract; the input flags "
                             "are for models made elsewhere")
        return Runnable(model.path, model.path)
    if not flags.given:
        status, recorded = contract_status(model.path, trust_model)
        if status != FOREIGN:
            return Runnable(model.path, model.path, recorded)
    return _adapt(model.path, flags, data, trust_model)


def runnable_path(path: str | os.PathLike, flags: ConventionFlags = NO_FLAGS,
                  data: str | os.PathLike | None = None,
                  say: Callable[[str], None] = lambda line: None,
                  trust_model: bool = False) -> Path:
    """runnable_model's path, telling `say` (once) what was resolved."""
    run = runnable_model(path, flags, data, trust_model)
    if run.line():
        say(run.line())
    return run.path


def _adapt(path: Path, flags: ConventionFlags, data, trust_model: bool) -> Runnable:
    from digitkit.model.detect import CONTRACT, resolve_convention
    from digitkit.predictors.adapted import adapted_copy, load_source

    loaded = load_source(path, trust_model)
    images, labels = _mnist_test(path, flags, data)
    detection = resolve_convention(loaded.source, images, labels, flags)
    if detection.how == CONTRACT:
        return Runnable(path, path, None, detection)
    return Runnable(adapted_copy(loaded, detection.convention), path, detection.convention,
                    detection)


#: Stand-in images when a declared convention is run without MNIST at hand: what the model
#: outputs (probabilities or logits) is read off them; nothing is scored.
_STAND_IN_IMAGES = 64


def _mnist_test(path: Path, flags: ConventionFlags, data):
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
            return rng.integers(0, 256, (_STAND_IN_IMAGES, 28, 28)).astype(np.float32), None
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
                    trust_model: bool = False) -> None:
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
                setattr(m, attr, runnable_path(p, flags, data, say, trust_model))
            elif attr == "keras" and recorded:
                setattr(m, attr, recorded_copy(p, InputConvention.from_dict(recorded),
                                               trust_model))


def describe_flags(flags: ConventionFlags) -> str:
    """The flags as given, for messages ("--input-scale unit --ink black-on-white")."""
    keys = {v: k for k, v in FLAG_NAMES.items()}
    return " ".join(f"{f} {getattr(flags, keys[f])}" for f in flags.given)


__all__ = ["Runnable", "describe_flags", "recorded_copy", "runnable_copies", "runnable_model",
           "runnable_path"]
