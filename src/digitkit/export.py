"""Export a Keras .h5 model to a SavedModel and ONNX, validated against the source model.

Layout of the export directory (other commands read it; see `export_model`):

    model.h5          copy of the source, so the directory is self-contained
    saved_model/      SavedModel, signature "serving_default": pixels (None,28,28) float32
                      -> probabilities (None,10)
    model.onnx        ONNX, dynamic batch dimension, metadata_props describing the contract
    model.int8.onnx   only with quantize="int8"
    export.json       manifest: artifacts (path, format, size, sha256, validation), config

Artifacts are written to a staging directory inside the export directory and moved into
place only once they pass validation; a copy that fails is moved aside as `<name>.FAILED`
and the manifest says so, so nothing that failed ever sits under a good-looking name.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from digitkit import CLASS_NAMES, __version__
from digitkit.outputs import ensure_dir, guard_output, sha256_file, sha256_tree, write_json_atomic
from digitkit.errors import ModelError, UsageError, ValidationError
from digitkit.architectures import INPUT_NAME, INPUT_SHAPE, NUM_CLASSES, OUTPUT_NAME
from digitkit.quantize import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_ACCURACY_DROP
from digitkit.validate import DEFAULT_ATOL, DEFAULT_N_IMAGES, ArtifactValidation, format_table

#: ONNX opset. 17 is the newest opset every supported runtime runs (onnxruntime >= 1.13,
#: so every release our pin allows), it has LayerNormalization as a native op, and it sits in
#: the middle of tf2onnx 1.17's tested range; 18 (tf2onnx's maximum) moved the Reduce* axes
#: to inputs and buys nothing for these models.
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 13, 18  # 13: single-axis Softmax semantics; 18: tf2onnx 1.17's maximum

FORMATS = ("savedmodel", "onnx")
FORMAT_CHOICES = ("onnx", "savedmodel", "all")

SOURCE_COPY = "model.h5"
SAVEDMODEL_DIR = "saved_model"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
MANIFEST = "export.json"
FAILED_SUFFIX = ".FAILED"

#: The input contract written into every exported copy (ONNX metadata_props, export.json).
INPUT_CONTRACT = {
    "name": INPUT_NAME,
    "shape": ["N", *INPUT_SHAPE],
    "dtype": "float32",
    "value_range": [0, 255],
    "ink_polarity": "white ink on black background (MNIST convention)",
    "preprocessing": "none: normalisation is inside the graph; feed raw pixel values",
}
OUTPUT_CONTRACT = {
    "name": OUTPUT_NAME,
    "shape": ["N", NUM_CLASSES],
    "dtype": "float32",
    "meaning": "softmax probabilities, column i is class_labels[i]",
}

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_MODEL_CLASSES = {"Functional", "Sequential", "Model"}
_CODE_CLASSES = {"Lambda", "TFOpLambda", "__lambda__", "__function__"}


# --------------------------------------------------------------------------- source model


def check_model_file(path: str | os.PathLike) -> Path:
    """Cheap checks before anything is imported: exists, is a file, is HDF5, holds a model."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such file")
    if p.is_dir():
        raise ModelError(f"{p}: is a directory, expected a Keras .h5 model file")
    if p.suffix.lower() not in (".h5", ".hdf5"):
        got = f"a '{p.suffix}' file" if p.suffix else "a file without an extension"
        raise ModelError(f"{p}: expected a Keras HDF5 model (.h5), got {got}")
    try:
        with open(p, "rb") as f:
            magic = f.read(8)
    except OSError as e:
        raise ModelError(f"{p}: cannot read ({e.strerror or e})") from None
    if magic != _HDF5_MAGIC:
        raise ModelError(f"{p}: not an HDF5 file (wrong signature); expected a Keras .h5 model")
    return p


def read_model_config(path: str | os.PathLike) -> dict:
    """The architecture JSON stored in a Keras .h5 file, read with h5py (no code runs)."""
    import h5py

    p = Path(path)
    try:
        with h5py.File(p, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as e:
        raise ModelError(f"{p}: cannot open as HDF5 ({e})") from None
    if raw is None:
        raise ModelError(f"{p}: HDF5 file holds no Keras model config (a weights-only file?)")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    try:
        return json.loads(raw)
    except ValueError:
        raise ModelError(f"{p}: model_config attribute is not valid JSON") from None


def unsafe_parts(config: dict, is_known_layer=None) -> list[str]:
    """Describe every part of a Keras config that would run Python code when deserialised.

    Lambda layers carry marshalled bytecode; layers outside Keras (custom classes, modules
    other than keras.*) import and run the user's code. `is_known_layer(class_name)` says
    whether a layer class is one of Keras's own; without it only code-carrying parts are found.
    """
    found: list[str] = []

    def walk(node, in_layers=False):
        if isinstance(node, list):
            for item in node:
                walk(item, in_layers)
            return
        if not isinstance(node, dict):
            return
        cls = node.get("class_name")
        name = node.get("name") or (node.get("config") or {}).get("name")
        label = f"{cls} layer {name!r}" if name else f"{cls}"
        module = node.get("module")
        registered = node.get("registered_name")
        if cls in _CODE_CLASSES:
            found.append(f"{label} (runs arbitrary Python code)")
        elif isinstance(module, str) and module != "keras" and not module.startswith("keras."):
            found.append(f"{label} from module {module!r} (custom code)")
        elif isinstance(registered, str) and ">" in registered:
            found.append(f"{label} registered as {registered!r} (custom code)")
        elif (in_layers and isinstance(cls, str) and cls not in _MODEL_CLASSES
              and is_known_layer is not None and not is_known_layer(cls)):
            found.append(f"{label} (not a Keras layer: custom code)")
        for key, value in node.items():
            if key == "layers":
                walk(value, in_layers=True)
            elif isinstance(value, (dict, list)):
                walk(value, in_layers=False)

    walk(config)
    return list(dict.fromkeys(found))


def load_keras_model(path: str | os.PathLike, trust_model: bool = False):
    """Load a Keras .h5 model, refusing code-carrying models unless `trust_model`."""
    p = check_model_file(path)
    config = read_model_config(p)
    _quiet_tensorflow()
    import keras

    def known(cls: str) -> bool:
        return isinstance(getattr(keras.layers, cls, None), type)

    problems = unsafe_parts(config, known)
    if problems and not trust_model:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ModelError(f"{p}: refusing to load a model that can run arbitrary code: "
                         f"{problems[0]}{more}; pass --trust-model if you trust its source")
    try:
        model = keras.models.load_model(p, compile=False, safe_mode=not trust_model)
    except Exception as e:  # noqa: BLE001 - any loader failure is a bad model file for the user
        raise ModelError(f"{p}: cannot load Keras model ({_one_line(e)})") from None
    _check_contract(p, model)
    return model


def _check_contract(path: Path, model) -> None:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{path}: expected one input and one output, got "
                         f"{len(model.inputs)} and {len(model.outputs)}")
    in_shape = tuple(model.inputs[0].shape)
    out_shape = tuple(model.outputs[0].shape)
    if in_shape[1:] != INPUT_SHAPE:
        raise ModelError(f"{path}: input shape {in_shape}, expected (None, 28, 28) raw pixels")
    if out_shape[1:] != (NUM_CLASSES,):
        raise ModelError(f"{path}: output shape {out_shape}, expected (None, {NUM_CLASSES})")


# --------------------------------------------------------------------------- data


def load_test_data(data=None, need_train: bool = False):
    """MNIST arrays through the shared data layer: (x_test, y_test, x_train or None, source)."""
    from digitkit.data import load_mnist

    d = load_mnist(data)
    return d.x_test, d.y_test, (d.x_train if need_train else None), d.source


# --------------------------------------------------------------------------- export


def export_model(h5_path, out_dir=None, formats=FORMATS, opset: int = DEFAULT_OPSET,
                 atol: float = DEFAULT_ATOL, quantize: str | None = None, data=None,
                 force: bool = False, trust_model: bool = False,
                 n_images: int = DEFAULT_N_IMAGES,
                 max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
                 echo=None) -> dict:
    """Export, validate and write the manifest; return it.

    Raises ValidationError (exit 4) after writing the manifest when any copy fails; the
    exception's `manifest` attribute holds it. `echo(line)` receives progress and the table.
    """
    say = echo or (lambda _line: None)
    t_start = time.perf_counter()
    formats = _normalise_formats(formats)
    _check_options(formats, opset, atol, quantize, n_images, max_accuracy_drop)
    src = check_model_file(h5_path)
    out = Path(out_dir) if out_dir is not None else src.resolve().parent / "export"
    planned = _planned_names(formats, quantize)
    same_source = (out / SOURCE_COPY).exists() and (out / SOURCE_COPY).resolve() == src.resolve()
    if out.exists() and not out.is_dir():
        raise ModelError(f"{out}: exists and is not a directory")
    for name in planned + [MANIFEST] + ([] if same_source else [SOURCE_COPY]):
        guard_output(out / name, force)

    src_sha = sha256_file(src)
    model = load_keras_model(src, trust_model)  # refuses unsafe models before we write a byte
    x_test, y_test, x_train, data_source = load_test_data(data, need_train=quantize == "int8")
    ensure_dir(out)
    from digitkit.validate import fill_reference, make_cases

    cases = make_cases(x_test, n_images)
    fill_reference(model, cases)
    say(f"loaded {src} ({_human(src.stat().st_size)}), sha256 {src_sha[:12]}; "
        f"validating on {len(cases[0].pixels)} MNIST test images + {len(cases) - 1} edge batches")

    staging = Path(tempfile.mkdtemp(prefix=".export-", suffix=".tmp", dir=out))
    try:
        results, extra = _build_and_validate(model, staging, formats, opset, atol, quantize,
                                             cases, src, src_sha, x_test, y_test, x_train,
                                             max_accuracy_drop, say)
        artifacts = _install(staging, out, results, force, src, same_source)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    ok = all(r.ok for r in results.values())
    manifest = _manifest(src, src_sha, out, formats, opset, atol, quantize, n_images,
                         max_accuracy_drop, data_source, artifacts, results, extra, ok,
                         time.perf_counter() - t_start)
    write_json_atomic(out / MANIFEST, manifest)

    say("")
    say(format_table(list(results.values()),
                     reference=f"keras (keras {manifest['config']['versions'].get('keras', '?')})"))
    say("")
    for a in artifacts.values():
        say(f"  {a['path']:<22} {a['format']:<11} {_human(a['size_bytes']):>9}  "
            f"sha256 {a['sha256'][:16]}  {a['status']}")
    say(f"  {MANIFEST:<22} manifest")
    if not ok:
        bad = ", ".join(name for name, r in results.items() if not r.ok)
        err = ValidationError(f"{out}: validation failed for {bad}; failing copies were moved "
                              f"aside as *{FAILED_SUFFIX} (see {out / MANIFEST})")
        err.manifest = manifest
        raise err
    return manifest


def _normalise_formats(formats) -> tuple[str, ...]:
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


def _check_options(formats, opset, atol, quantize, n_images, max_drop):
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise UsageError(f"--opset {opset} is outside tf2onnx 1.17's range "
                         f"{MIN_OPSET}..{MAX_OPSET}")
    if not atol >= 0:
        raise UsageError(f"--atol must be >= 0, got {atol}")
    if quantize not in (None, "int8"):
        raise UsageError(f"--quantize {quantize!r}: only 'int8' is supported")
    if quantize and "onnx" not in formats:
        raise UsageError("--quantize int8 quantizes the ONNX copy: use --format onnx or all")
    if n_images < 1:
        raise UsageError(f"need at least one validation image, got {n_images}")
    if not max_drop >= 0:
        raise UsageError(f"maximum accuracy drop must be >= 0, got {max_drop}")


def _planned_names(formats, quantize) -> list[str]:
    names = []
    if "savedmodel" in formats:
        names.append(SAVEDMODEL_DIR)
    if "onnx" in formats:
        names.append(ONNX_FILE)
    if quantize == "int8":
        names.append(INT8_FILE)
    return names


def _artifact_name(fmt: str) -> str:
    return {"savedmodel": SAVEDMODEL_DIR, "onnx": ONNX_FILE, "onnx-int8": INT8_FILE}[fmt]


def _serving_function(model):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None, *INPUT_SHAPE), tf.float32,
                                                name=INPUT_NAME)])
    def serve(pixels):
        return {OUTPUT_NAME: model(pixels, training=False)}

    return serve


def _build_and_validate(model, staging, formats, opset, atol, quantize, cases, src, src_sha,
                        x_test, y_test, x_train, max_drop, say):
    from digitkit.validate import validate_onnx, validate_savedmodel

    serve = _serving_function(model)
    results: dict[str, ArtifactValidation] = {}
    extra: dict = {}
    if "savedmodel" in formats:
        t = time.perf_counter()
        save_savedmodel(model, serve, staging / SAVEDMODEL_DIR)
        results["savedmodel"] = validate_savedmodel(staging / SAVEDMODEL_DIR, cases, atol)
        say(f"savedmodel: written and validated in {time.perf_counter() - t:.1f} s")
    if "onnx" in formats:
        t = time.perf_counter()
        save_onnx(serve, staging / ONNX_FILE, opset, src, src_sha)
        results["onnx"] = validate_onnx(staging / ONNX_FILE, cases, atol)
        say(f"onnx: converted (opset {opset}), checked and validated in "
            f"{time.perf_counter() - t:.1f} s")
    if quantize == "int8":
        t = time.perf_counter()
        results["onnx-int8"], extra["int8"] = _quantize_and_check(
            staging, cases, x_test, y_test, x_train, max_drop, results["onnx"])
        say(f"onnx-int8: quantized and evaluated on {len(x_test)} test images in "
            f"{time.perf_counter() - t:.1f} s")
    return results, extra


def save_savedmodel(model, serve, path: Path) -> None:
    """SavedModel with one named signature; the model is tracked so its variables are saved."""
    import tensorflow as tf

    module = tf.Module()
    module.model = model
    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})


def save_onnx(serve, path: Path, opset: int, src: Path, src_sha: str) -> None:
    """Convert the serving function with tf2onnx, add metadata, run onnx's full checker.

    tf2onnx's from_keras does not understand Keras 3 models; converting the same
    tf.function the SavedModel serves gives one graph for both copies.
    """
    import onnx
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                                 opset=opset)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"{src}: ONNX conversion failed ({_one_line(e)})") from None
    # tf2onnx names the dynamic dimension "unk__N"; a consumer should read "batch".
    for value in list(proto.graph.input) + list(proto.graph.output):
        dim0 = value.type.tensor_type.shape.dim[0]
        dim0.ClearField("dim_value")
        dim0.dim_param = "batch"
    proto.producer_name = "digitkit"
    proto.producer_version = f"{__version__} (tf2onnx {tf2onnx.__version__})"
    proto.doc_string = (f"digitkit export of {src.name}: {INPUT_NAME} float32 (batch,28,28) "
                        f"raw 0..255 white-on-black -> {OUTPUT_NAME} (batch,10) softmax")
    onnx.helper.set_model_props(proto, onnx_metadata(src, src_sha))
    onnx.save(proto, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # noqa: BLE001 - checker raises several types
        raise ModelError(f"{path.name}: onnx.checker rejected the converted model "
                         f"({_one_line(e)})") from None


def onnx_metadata(src: Path, src_sha: str) -> dict[str, str]:
    """metadata_props: everything a consumer needs without guessing (all values are strings)."""
    return {
        "class_labels": json.dumps(list(CLASS_NAMES)),
        "input_name": INPUT_NAME,
        "input_shape": json.dumps(INPUT_CONTRACT["shape"]),
        "input_dtype": INPUT_CONTRACT["dtype"],
        "input_value_range": json.dumps(INPUT_CONTRACT["value_range"]),
        "input_ink_polarity": INPUT_CONTRACT["ink_polarity"],
        "input_preprocessing": INPUT_CONTRACT["preprocessing"],
        "output_name": OUTPUT_NAME,
        "output_meaning": OUTPUT_CONTRACT["meaning"],
        "source_model": src.name,
        "source_model_sha256": src_sha,
        "digitkit_version": __version__,
    }


def _quantize_and_check(staging, cases, x_test, y_test, x_train, max_drop, float_result):
    from digitkit.quantize import onnx_accuracy, quantize_int8
    from digitkit.validate import validate_onnx

    int8_path = staging / INT8_FILE
    try:
        quantize_int8(staging / ONNX_FILE, int8_path, x_train[:DEFAULT_CALIBRATION_IMAGES])
    except Exception as e:  # noqa: BLE001
        res = ArtifactValidation("onnx-int8", "onnxruntime.quantization", None,
                                 error=f"quantization failed: {_one_line(e)}")
        return res, {}
    # int8 probabilities legitimately differ by ~1e-2: the copy is held to names, shapes and
    # test accuracy; its differences are reported, not judged against atol.
    res = validate_onnx(int8_path, cases, atol=None, name="onnx-int8")
    float_acc, _ = onnx_accuracy(staging / ONNX_FILE, x_test, y_test)
    int8_acc, _ = onnx_accuracy(int8_path, x_test, y_test)
    drop = (float_acc - int8_acc) * 100
    info = {
        "test_images": int(len(x_test)),
        "calibration_images": int(min(DEFAULT_CALIBRATION_IMAGES, len(x_train))),
        "float_accuracy": round(float_acc, 6),
        "int8_accuracy": round(int8_acc, 6),
        "accuracy_drop_points": round(drop, 4),
        "max_accuracy_drop_points": max_drop,
        "float_size_bytes": (staging / ONNX_FILE).stat().st_size,
        "int8_size_bytes": int8_path.stat().st_size,
    }
    res.notes = (f"test accuracy int8 {int8_acc:.2%} vs float {float_acc:.2%} "
                 f"(drop {drop:.2f} pt, allowed {max_drop:.2f}); size "
                 f"{_human(info['int8_size_bytes'])} vs {_human(info['float_size_bytes'])}")
    if drop > max_drop:
        res.failure = (f"top-1 accuracy drops {drop:.2f} points "
                     f"({float_acc:.2%} -> {int8_acc:.2%}), more than the allowed {max_drop}")
    return res, info


def _install(staging, out, results, force, src, same_source) -> dict:
    """Move each copy into place if it passed, or aside as .FAILED; return artifact records."""
    artifacts: dict[str, dict] = {}
    if force:
        # Under --force the directory is ours to rewrite: drop copies from earlier runs so
        # nothing remains that export.json does not describe.
        for name in (SAVEDMODEL_DIR, ONNX_FILE, INT8_FILE):
            for stale in (out / name, out / (name + FAILED_SUFFIX)):
                _remove(stale)
    if not same_source:
        tmp = staging / SOURCE_COPY
        shutil.copyfile(src, tmp)
        _remove(out / SOURCE_COPY)
        os.replace(tmp, out / SOURCE_COPY)
    artifacts["keras"] = _record(out, SOURCE_COPY, "keras-h5", "source")
    for fmt, res in results.items():
        name = _artifact_name(fmt)
        built = staging / name
        if not (built.exists()):
            artifacts[fmt] = {"path": None, "format": fmt, "size_bytes": 0, "sha256": "",
                              "status": "failed"}
            continue
        final = name if res.ok else name + FAILED_SUFFIX
        _remove(out / final)
        if not res.ok:
            _remove(out / name)  # an older good-looking copy must not outlive a failed one
        os.replace(built, out / final)
        artifacts[fmt] = _record(out, final, fmt, "passed" if res.ok else "failed")
    return artifacts


def _record(out: Path, name: str, fmt: str, status: str) -> dict:
    p = out / name
    if p.is_dir():
        size = sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
        digest = sha256_tree(p)
    else:
        size = p.stat().st_size
        digest = sha256_file(p)
    rec = {"path": name, "format": fmt, "size_bytes": size, "sha256": digest, "status": status}
    if fmt == "savedmodel":
        rec["sha256_method"] = "digitkit.outputs.sha256_tree (relative paths + file sha256s)"
        rec["signature"] = {"name": "serving_default",
                            "inputs": {INPUT_NAME: {"shape": [None, *INPUT_SHAPE],
                                                    "dtype": "float32"}},
                            "outputs": {OUTPUT_NAME: {"shape": [None, NUM_CLASSES],
                                                      "dtype": "float32"}}}
    return rec


def _manifest(src, src_sha, out, formats, opset, atol, quantize, n_images, max_drop,
              data_source, artifacts, results, extra, ok, seconds) -> dict:
    for fmt, res in results.items():
        artifacts[fmt]["validation"] = res.to_dict()
    if "int8" in extra and "onnx-int8" in artifacts:
        artifacts["onnx-int8"]["accuracy"] = extra["int8"]
    return {
        "digitkit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "passed" if ok else "failed",
        "export_dir": str(out.resolve()),
        "source": {"path": str(src), "sha256": src_sha, "copy": SOURCE_COPY},
        "model": {"input": INPUT_CONTRACT, "output": OUTPUT_CONTRACT,
                  "class_labels": list(CLASS_NAMES)},
        "config": {
            "formats": list(formats),
            "opset": opset if "onnx" in formats else None,
            "atol": atol,
            "source_sha256": src_sha,
            "quantize": quantize,
            "max_accuracy_drop_points": max_drop if quantize else None,
            "validation_images": n_images,
            "data_source": data_source,
            "versions": _versions(),
        },
        "artifacts": artifacts,
        "seconds": round(seconds, 2),
    }


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "digitkit": __version__}
    for pkg in ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime",
                "numpy"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return found


# --------------------------------------------------------------------------- re-validation


def validate_export_dir(export_dir, data=None, atol: float = DEFAULT_ATOL,
                        n_images: int = DEFAULT_N_IMAGES,
                        trust_model: bool = False) -> list[ArtifactValidation]:
    """Re-check an existing export directory against its own model.h5 (no files written)."""
    from digitkit.validate import fill_reference, make_cases, validate_onnx, validate_savedmodel

    root = Path(export_dir)
    if not (root / SOURCE_COPY).exists():
        raise ModelError(f"{root}: no {SOURCE_COPY} here; not a digitkit export directory")
    x_test, _, _, _ = load_test_data(data)
    cases = make_cases(x_test, n_images)
    fill_reference(load_keras_model(root / SOURCE_COPY, trust_model), cases)
    results = []
    if (root / SAVEDMODEL_DIR).is_dir():
        results.append(validate_savedmodel(root / SAVEDMODEL_DIR, cases, atol))
    if (root / ONNX_FILE).is_file():
        results.append(validate_onnx(root / ONNX_FILE, cases, atol))
    return results


# --------------------------------------------------------------------------- helpers


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _quiet_tensorflow() -> None:
    # TF's C++ start-up chatter (oneDNN, CPU features) is noise on a command line.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:300]


__all__ = [
    "DEFAULT_ATOL", "DEFAULT_OPSET", "FORMATS", "check_model_file", "export_model",
    "load_keras_model", "onnx_metadata", "read_model_config", "unsafe_parts",
    "validate_export_dir",
]
