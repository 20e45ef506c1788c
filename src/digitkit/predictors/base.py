"""The predictor contract: what every runtime in the predictor layer is to its callers.

`Predictor` is the protocol `bench`, `infer`, export validation and the adapted-copy checks
program against; `LazyPredictor` is the small base class every runtime's predictor derives
from, so that the rules they share are written once:

- the constructor is cheap: it checks only that the model path is there (a ModelError naming
  it otherwise) and loads nothing, so a process pool or a Ray actor can be set up before any
  runtime threads exist, and a bad MODEL argument fails before any work starts;
- `load()` opens the runtime once, on the first call (or the first `predict`), and returns
  the predictor; a file the runtime cannot read is a one-line ModelError naming the file, a
  runtime that is not installed a one-line DependencyError naming the extra.

tests/test_predictors_contract.py holds every row of `predictors.RUNTIMES` to this contract.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from digitkit.errors import ModelError

if TYPE_CHECKING:  # numpy only for the annotations: the protocol imports nothing heavy
    import numpy as np


@runtime_checkable
class Predictor(Protocol):
    """Pixels in, probabilities out, on one runtime.

    predict: float32 raw pixels `(N, *contract.pixels_shape)` on the contract's 0..255
        scale (the model layer's `model.contract`: `(N, 28, 28)` for digits, `(N, H, W, C)`
        for a general classifier) -> float32 probabilities `(N, K)`.
    load: open the runtime now (it opens on the first `predict` otherwise); returns self.
    runtime: the runtime family it runs on ("onnxruntime", "openvino", "litert",
        "tensorflow"), as records and messages name it.
    model_path: the model file or directory it runs.
    options: what it hands its runtime besides the model (threads, spinning, precision,
        device, fixed session settings), JSON values, known without loading: a timing
        depends on them, so `auto`'s cache key carries them.
    """

    runtime: str
    model_path: Path

    def load(self) -> Predictor: ...

    def options(self) -> dict: ...

    def predict(self, pixels: np.ndarray) -> np.ndarray: ...


def reshapes_to(got: tuple, want: tuple | None) -> bool:
    """Whether pixels of shape `got` (after the batch dimension) become a model input of
    static shape `want` by a reshape alone, the values in the same order: flattened, or a
    unit channel axis added or dropped ((28, 28) -> (784,) or (28, 28, 1)). Never a
    transposition: (H, W, 3) does not become (3, H, W)."""
    import math

    if want is None or got == want:
        return False
    if math.prod(got) != math.prod(want):
        return False
    return (len(want) == 1 or len(got) == 1
            or [d for d in got if d != 1] == [d for d in want if d != 1])


class LazyPredictor:
    """The shared part of every predictor: the path check and the load-once behaviour.

    A subclass sets `runtime` (and `accepts_directory` when its model may be a directory,
    as a SavedModel is), calls `super().__init__(model_path)` before its own checks, and
    implements `_load()`, which opens the runtime and raises ModelError/DependencyError.
    """

    runtime: ClassVar[str]
    #: Whether the model may be a directory (a SavedModel) rather than one file.
    accepts_directory: ClassVar[bool] = False

    def __init__(self, model_path: str | os.PathLike):
        self.model_path = Path(model_path)
        if self.accepts_directory:
            if not self.model_path.exists():
                raise ModelError(f"{self.model_path}: no such model file or directory")
        elif not self.model_path.is_file():
            raise ModelError(f"{self.model_path}: no such model file")
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self):
        if not self._loaded:
            self._load()
            self._loaded = True
        return self

    def _load(self) -> None:
        raise NotImplementedError

    def options(self) -> dict:
        raise NotImplementedError
