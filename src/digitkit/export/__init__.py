"""Export a Keras .h5 model to a SavedModel, ONNX and LiteRT, validated against the source.

Layout of the export directory (names in digitkit.model.files; other commands read it):

    model.h5          copy of the source, so the directory is self-contained
    saved_model/      SavedModel, signature "serving_default": the contract's input, e.g.
                      pixels (None,28,28) float32 -> probabilities (None,10) for digits
    model.onnx        ONNX, dynamic batch dimension, metadata_props describing the contract
    model.int8.onnx   only with quantize="int8"
    model.tflite      LiteRT flatbuffer (weights frozen), signature "serving_default"
    export.json       manifest: artifacts (path, format, size, sha256, validation), config

The room: `config` (ExportConfig, defaults and their reasons, option checks), `origin` (the
source model, one type for every model: what the copies are made from and held to),
`formats` (the one table of copies: how each is built and validated), `validate` (parity
checks and the table), `quantize` (int8), `tflite` (the LiteRT conversion and its check),
`context` (what the steps see), `manifest` (staging, install, export.json). The CLI imports
`config` for --help, which runs this file too: everything heavy is imported inside the
functions below.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

from digitkit.errors import ModelError, ValidationError
from digitkit.export.config import DEFAULT_N_IMAGES, DEFAULT_RTOL, ExportConfig, default_atol
from digitkit.export.formats import FORMATS
from digitkit.export.origin import check_source
from digitkit.model.files import FAILED_SUFFIX, MANIFEST, ONNX, SOURCE_COPY


def export_model(source: str | os.PathLike, config: ExportConfig | None = None,
                 echo=None) -> dict:
    """Export, validate and write the manifest; return it.

    Raises ValidationError (exit 4) after writing the manifest when any copy fails; the
    exception's `manifest` attribute holds it. `echo(line)` receives progress and the table.
    """
    from digitkit.artifacts import ensure_dir, write_json_atomic
    from digitkit.export import origin as origins
    from digitkit.export.context import ExportContext
    from digitkit.export.manifest import build_manifest, install, prepare_target, staging_dir
    from digitkit.export.validate import human_size
    from digitkit.model.loading import import_tensorflow
    from digitkit.predictors.adapted import source_sha256

    say = echo or (lambda _line: None)
    config = config if config is not None else ExportConfig()
    t_start = time.perf_counter()
    src_file = check_source(source)
    src = src_file.path
    formats = origins.check_formats(src_file, config.formats, config.formats == FORMATS)
    if formats != config.formats:
        dropped = ", ".join(f for f in config.formats if f not in formats)
        say(f"an ONNX source becomes ONNX copies only (no TensorFlow graph): skipping {dropped}")
    config = replace(config, formats=formats)
    target = prepare_target(src, config, origins.SOURCE_COPIES[src_file.kind],
                            origins.SOURCE_FORMATS[src_file.kind])
    if src_file.kind != ONNX:  # an ONNX source's copies are ONNX graphs: no TensorFlow
        import_tensorflow("digitkit export")
    src_sha = source_sha256(src)
    origin, data = origins.open_export_source(src_file, config, say)
    if config.atol is None:  # the tolerance follows what kind of model it is
        config = replace(config, atol=default_atol(origin.contract))
    ensure_dir(target.out)
    cases = parity_cases(data, config.n_images, origin.contract)
    origin.fill_reference(cases)  # the source under its own convention
    say(f"loaded {src} ({human_size(_size(src))}), sha256 {src_sha[:12]}; "
        f"validating on {_cases_text(cases, data)}")

    with staging_dir(target.out) as staging:
        ctx = ExportContext(config, src, origin, staging, cases, data, src_sha)
        results = _build_and_validate(ctx, say)
        origins.add_copy_accuracies(ctx, results)
        artifacts = install(target, staging, results, origin.contract)

    manifest = build_manifest(ctx, target, artifacts, results, time.perf_counter() - t_start)
    write_json_atomic(target.out / MANIFEST, manifest)
    _report(say, manifest, results, origin)
    if manifest["status"] != "passed":
        bad = ", ".join(name for name, r in results.items() if not r.ok)
        err = ValidationError(f"{target.out}: validation failed for {bad}; failing copies "
                              f"were moved aside as *{FAILED_SUFFIX} (see "
                              f"{target.out / MANIFEST})")
        err.manifest = manifest
        raise err
    return manifest


def parity_cases(data, n_images: int, contract) -> list:
    """The parity cases of an export: MNIST test images and edge inputs for a digit model;
    calibration pixels, seeded random pixels and edge inputs for a general one."""
    from digitkit.export.evidence import is_general
    from digitkit.export.validate import general_cases, make_cases

    if is_general(data):
        return general_cases(data.x_test, n_images, contract)
    return make_cases(data.x_test, n_images, contract)


def _cases_text(cases: list, data) -> str:
    from digitkit.export.evidence import is_general

    if not is_general(data):
        return f"{len(cases[0].pixels)} MNIST test images + {len(cases) - 1} edge batches"
    real = len(cases[0].pixels) if data.has_images else 0
    noise = len(cases[1 if real else 0].pixels)
    head = f"{real} calibration images + " if real else ""
    return f"{head}{noise} seeded random images + {len(cases) - (2 if real else 1)} edge batches"


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(q.stat().st_size for q in path.rglob("*") if q.is_file())
    return path.stat().st_size


def _build_and_validate(ctx, say) -> dict:
    """Build and validate every chosen format in table order: {format name: validation}."""
    from digitkit.export.formats import BuildFailed, selected

    results = {}
    for fmt in selected(ctx.config.formats, ctx.config.quantize):
        t = time.perf_counter()
        path = ctx.path(fmt.name)
        try:
            fmt.build(ctx, path)
            results[fmt.name] = fmt.validate(ctx, path)
        except BuildFailed as e:
            results[fmt.name] = e.result
        done = (ctx.origin.progress(fmt.name)
                or (fmt.done if ctx.test_images or not fmt.unevaluated else fmt.unevaluated)
                .format(opset=ctx.config.opset, test_images=ctx.test_images,
                        evidence="test" if ctx.contract.is_digit else "calibration"))
        say(f"{fmt.name}: {done} in {time.perf_counter() - t:.1f} s")
    return results


def _report(say, manifest: dict, results: dict, origin) -> None:
    from digitkit.export.manifest import format_artifacts
    from digitkit.export.validate import format_table

    keras = manifest["config"]["versions"].get("keras", "?")
    say("")
    say(format_table(list(results.values()), reference=origin.reference_label(keras),
                     contract=origin.contract))
    say("")
    for line in format_artifacts(manifest["artifacts"]):
        say(line)


def validate_export_dir(export_dir: str | os.PathLike, data=None, atol: float | None = None,
                        n_images: int = DEFAULT_N_IMAGES, trust_model: bool = False,
                        rtol: float = DEFAULT_RTOL) -> list:
    """Re-check an existing export directory against its own source copy (no files written):
    model.h5, or for a model made elsewhere the copy export.json names, run under the input
    convention export.json records, both under the contract it records.

    Runs the export's own validate steps on the float copies present (--format's); the int8
    copy is held to test accuracy, which the export measured and recorded. A general model's
    copies are re-checked on the calibration folder export.json names when it is still there,
    else on seeded random pixels.
    """
    import json

    from digitkit.data import load_mnist
    from digitkit.export.context import ExportContext
    from digitkit.export.evidence import load_calibration
    from digitkit.export.formats import EXPORT_FORMATS
    from digitkit.export.origin import recorded_export_source
    from digitkit.model.contract import contract_from_record

    root = Path(export_dir)
    manifest = root / MANIFEST
    record = json.loads(manifest.read_text()) if manifest.is_file() else {}
    recorded = record.get("source") or {}
    contract = contract_from_record(record.get("model"), str(manifest))
    copy = root / recorded.get("copy", SOURCE_COPY)
    if not copy.exists():
        raise ModelError(f"{root}: no {copy.name} here; not a digitkit export directory")
    atol = default_atol(contract) if atol is None else atol
    config = ExportConfig(atol=atol, rtol=rtol, n_images=n_images, data=data,
                          trust_model=trust_model)
    if contract.is_digit:
        evidence = load_mnist(data)
    else:
        folder = (record.get("calibration") or {}).get("folder")
        folder = folder if folder and Path(folder).is_dir() else None
        evidence = load_calibration(folder, contract, lambda _line: None)
    cases = parity_cases(evidence, n_images, contract)
    origin = recorded_export_source(copy, recorded, trust_model, contract)
    origin.fill_reference(cases)
    ctx = ExportContext(config, copy, origin, root, cases, evidence)
    return [fmt.validate(ctx, ctx.path(fmt.name)) for fmt in EXPORT_FORMATS.values()
            if fmt.quantize is None and ctx.path(fmt.name).exists()]


__all__ = ["ExportConfig", "check_source", "export_model", "validate_export_dir"]
