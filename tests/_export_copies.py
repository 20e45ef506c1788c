"""The copies an export directory holds, read back as a user's next command reads them: the
contract each carries (no flags) and its predictions through digitkit's own predictors. Shared
by the export tests of general models (tests/test_export_general*.py)."""

from __future__ import annotations

from pathlib import Path

#: copy name -> its path inside an export directory (the general model's formats).
COPY_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx",
              "savedmodel": "saved_model", "tflite": "model.tflite"}


def copies(out: Path) -> dict[str, Path]:
    """{copy name: path} of every copy COPY_FILES names, in the export directory `out`."""
    return {name: Path(out) / f for name, f in COPY_FILES.items()}


def read_back(path: Path):
    """The contract a copy carries, read as a user's next command would: no flags."""
    from digitkit.model.contract import contract_from_metadata
    from digitkit.model.embedded import read_contract, read_tflite_contract

    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        return contract_from_metadata(props, str(path))
    if path.suffix == ".tflite":
        return read_tflite_contract(path)
    return read_contract(path)


def predict(path: Path, x):
    """The copy's outputs on pixels `x`, through the predictor its format runs on."""
    from digitkit.predictors.litert import LiteRTPredictor
    from digitkit.predictors.ort import OnnxPredictor
    from digitkit.predictors.tf import SavedModelPredictor

    path = Path(path)
    if path.suffix == ".onnx":
        return OnnxPredictor(path).predict(x)
    if path.suffix == ".tflite":
        return LiteRTPredictor(path, allow_tensorflow=True).predict(x)
    return SavedModelPredictor(path).predict(x)
