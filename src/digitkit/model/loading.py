"""Loading models safely: the one Keras loader and the one SavedModel loader.

A Keras file's architecture is read as JSON first (h5py, or the .keras zip) so that a model
carrying Python code (Lambda layers, custom classes) is refused before anything deserialises
it; a SavedModel's graph is held to model.safety's allow-list before TensorFlow loads it;
`trust_model=True` is the user's explicit opt-in. TensorFlow is imported only here, inside
functions, and only through `import_tensorflow`, which turns a missing extra into one line.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

# Re-exported: the names the rest of the package imports them by.
from digitkit.environment import (  # noqa: F401
    TENSORFLOW_EXTRA,
    import_tensorflow,
    require_tensorflow,
)
from digitkit.errors import ModelError, missing_extra, one_line
from digitkit.model.contract import DIGIT_CONTRACT
from digitkit.model.files import KERAS_H5, KERAS_V3, SAVEDMODEL, identify
from digitkit.model.safety import check_keras


def read_model_config(path: str | os.PathLike) -> dict:
    """The architecture JSON stored in a Keras .h5 or .keras file (no code runs)."""
    p = Path(path)
    if p.suffix.lower() == ".keras":
        try:
            with zipfile.ZipFile(p) as z:
                raw = z.read("config.json")
        except (OSError, KeyError, zipfile.BadZipFile) as err:
            raise ModelError(f"{p}: cannot read the Keras archive's config.json ({err})") from err
    else:
        try:
            import h5py
        except ImportError as err:
            raise missing_extra("reading a Keras .h5 model", TENSORFLOW_EXTRA) from err
        try:
            with h5py.File(p, "r") as f:
                raw = f.attrs.get("model_config")
        except OSError as err:
            raise ModelError(f"{p}: cannot open as HDF5 ({err})") from err
        if raw is None:
            raise ModelError(f"{p}: HDF5 file holds no Keras model config (a weights-only "
                             "file?)")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    try:
        return json.loads(raw)
    except ValueError as err:
        raise ModelError(f"{p}: model config is not valid JSON") from err


def load_keras_model(path: str | os.PathLike, trust_model: bool = False,
                     check_contract: bool = True):
    """Load a Keras .h5/.keras model that honours its contract (`keras_contract`), refusing
    code-carrying models unless `trust_model`. `check_contract=False` loads a model made
    elsewhere, whatever its input and output shapes (digitkit.model.foreign and adapters take
    it from there); the refusal of code-carrying models is the same either way."""
    model_file = identify(path)
    p = model_file.path
    if model_file.kind not in (KERAS_H5, KERAS_V3):
        raise ModelError(f"{p}: expected a Keras model (.h5 or .keras)")
    config = read_model_config(p)
    import_tensorflow("loading a Keras model")
    import keras

    def known(cls: str) -> bool:
        return isinstance(getattr(keras.layers, cls, None), type)

    check_keras(p, config, known, trust_model)
    try:
        model = keras.models.load_model(p, compile=False, safe_mode=not trust_model)
    except Exception as err:  # noqa: BLE001 - any loader failure is a bad model file for the user
        raise ModelError(f"{p}: cannot load Keras model ({one_line(err)})") from err
    if check_contract:
        keras_contract(p, model).check_keras(p, model)
    return model


def keras_contract(path, model):
    """The contract a Keras model is held to: the one its file records
    (digitkit.model.embedded), else a general image contract for a model presenting one by
    name ("pixels" (N, H, W, C) -> "probabilities" (N, K), names "0".."K-1"), else
    DIGIT_CONTRACT (whose check refuses anything else, as always)."""
    from digitkit.model.embedded import read_contract

    recorded = read_contract(path)
    if recorded is not None:
        return recorded
    from digitkit.model.foreign import named_contract_shape, shape_contract

    if len(model.inputs) == 1 and len(model.outputs) == 1:
        in_shape = tuple(model.inputs[0].shape)
        out_name = (getattr(model, "output_names", None) or [model.layers[-1].name])[0]
        if named_contract_shape(model.inputs[0].name, out_name, in_shape) and len(in_shape) == 4:
            try:
                return shape_contract(str(path), in_shape, tuple(model.outputs[0].shape))
            except ModelError:
                pass  # the digit check below names what is wrong
    return DIGIT_CONTRACT


@dataclass
class SavedModelSignature:
    """A SavedModel's serving signature, ready to call; `loaded` keeps its variables alive
    (the signature holds only a weak reference to them)."""

    path: Path
    loaded: object
    fn: object
    input_name: str
    output_names: list[str]
    input_shape: tuple

    def __call__(self, pixels) -> dict:
        import tensorflow as tf

        return {k: v.numpy() for k, v in self.fn(**{self.input_name: tf.constant(pixels)}).items()}


def load_savedmodel(path: str | os.PathLike, trust_model: bool = False) -> SavedModelSignature:
    """Load a SavedModel directory and its "serving_default" signature (one input), refusing
    a graph that does more than compute on tensors unless `trust_model` (model.safety):
    loading runs part of it, so the check comes first."""
    from digitkit.model.safety import check_savedmodel

    model_file = identify(path)
    p = model_file.path
    if model_file.kind != SAVEDMODEL:
        raise ModelError(f"{p}: expected a SavedModel directory")
    tf = import_tensorflow("loading a SavedModel")
    check_savedmodel(p, trust_model)
    try:
        loaded = tf.saved_model.load(str(p))
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"{p}: cannot load SavedModel ({one_line(err)})") from err
    fn = loaded.signatures.get("serving_default")
    if fn is None:
        raise ModelError(f'{p}: SavedModel has no "serving_default" signature')
    spec = fn.structured_input_signature[1]
    if len(spec) != 1:
        raise ModelError(f"{p}: serving signature has inputs {list(spec)}, expected one")
    in_name = next(iter(spec))
    return SavedModelSignature(p, loaded, fn, in_name, list(fn.structured_outputs),
                               tuple(spec[in_name].shape.as_list()))
