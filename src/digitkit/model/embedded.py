"""The contract a model file carries inside itself: class names, input size, channels and
pixel policy travel with the model, so no copy needs flags (issue 18).

Where each kind of file keeps it (the JSON form of ModelContract.to_dict, plus an optional
"convention" record for a model that takes other pixels than raw 0..255):

  .keras        a zip member "digitkit.json" (Keras' loader reads only its own members)
  .h5           the root attribute "digitkit_contract" (Keras ignores unknown attributes)
  SavedModel    assets/digitkit.json (saved and restored with the model, never executed)
  .onnx         metadata_props (ModelContract.onnx_metadata; digitkit.model.contract
                `contract_from_metadata` reads it back)
  .tflite       the model's metadata buffer "digitkit_contract" (export/tflite.py writes it)

Reading never runs anything in the model: a zip listing, an HDF5 attribute, a JSON file.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from digitkit.errors import ModelError
from digitkit.model.contract import ModelContract, contract_from_record

KERAS_MEMBER = "digitkit.json"
H5_ATTRIBUTE = "digitkit_contract"
SAVEDMODEL_ASSET = "digitkit.json"
#: The largest embedded record read: a record is names and a policy (ImageNet-21k's names
#: take ~0.5 MB).
MAX_RECORD = 8 * 2**20


def embedded_record(contract: ModelContract, convention: dict | None = None) -> dict:
    """What a model file carries: {"model": the contract's JSON form, "convention": the input
    convention it was trained on, when not raw pixels}."""
    record = {"model": contract.to_dict()}
    if convention:
        record["convention"] = convention
    return record


def write_contract(path: str | os.PathLike, contract: ModelContract,
                   convention: dict | None = None) -> None:
    """Record `contract` inside the model at `path` (.keras, .h5 or a SavedModel folder)."""
    p = Path(path)
    text = json.dumps(embedded_record(contract, convention), indent=1)
    if p.is_dir():
        (p / "assets").mkdir(exist_ok=True)
        (p / "assets" / SAVEDMODEL_ASSET).write_text(text + "\n")
    elif p.suffix.lower() == ".keras":
        with zipfile.ZipFile(p, "a") as z:
            if KERAS_MEMBER in z.namelist():
                raise ModelError(f"{p}: already carries a {KERAS_MEMBER}")
            z.writestr(KERAS_MEMBER, text)
    elif p.suffix.lower() in (".h5", ".hdf5"):
        import h5py

        with h5py.File(p, "a") as f:
            f.attrs[H5_ATTRIBUTE] = text
    else:
        raise ModelError(f"{p}: cannot carry a contract (expected .keras, .h5 or a SavedModel)")


def read_record(path: str | os.PathLike) -> dict | None:
    """The record a model file carries, or None when it carries none."""
    p = Path(path)
    try:
        if p.is_dir():
            asset = p / "assets" / SAVEDMODEL_ASSET
            if not asset.is_file():
                return None
            from digitkit.inputs import read_regular

            text = read_regular(str(asset), MAX_RECORD).decode("utf-8")
        elif p.suffix.lower() == ".keras":
            with zipfile.ZipFile(p) as z:
                if KERAS_MEMBER not in z.namelist():
                    return None
                info = z.getinfo(KERAS_MEMBER)
                if info.file_size > MAX_RECORD:
                    raise ModelError(f"{p}: {KERAS_MEMBER} too large")
                text = z.read(info).decode("utf-8")
        elif p.suffix.lower() in (".h5", ".hdf5"):
            try:
                import h5py
            except ImportError:
                return None
            with h5py.File(p, "r") as f:
                value = f.attrs.get(H5_ATTRIBUTE)
            if value is None:
                return None
            text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        else:
            return None
        record = json.loads(text)
    except ModelError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, KeyError) as err:
        raise ModelError(f"{p}: unreadable digitkit contract record ({err})") from err
    if not isinstance(record, dict) or not isinstance(record.get("model"), dict):
        raise ModelError(f"{p}: digitkit contract record is not an object with a model")
    return record


def read_contract(path: str | os.PathLike) -> ModelContract | None:
    """The contract a model file carries (None: it carries none)."""
    record = read_record(path)
    return None if record is None else contract_from_record(record["model"], str(path))


__all__ = ["H5_ATTRIBUTE", "KERAS_MEMBER", "SAVEDMODEL_ASSET", "embedded_record",
           "read_contract", "read_record", "write_contract"]
