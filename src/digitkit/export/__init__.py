"""Export a Keras .h5 model to a SavedModel and ONNX, validated against the source model.

Layout of the export directory (names in digitkit.model.files; other commands read it):

    model.h5          copy of the source, so the directory is self-contained
    saved_model/      SavedModel, signature "serving_default": pixels (None,28,28) float32
                      -> probabilities (None,10)
    model.onnx        ONNX, dynamic batch dimension, metadata_props describing the contract
    model.int8.onnx   only with quantize="int8"
    export.json       manifest: artifacts (path, format, size, sha256, validation), config

The room: `config` (ExportConfig, defaults and their reasons, option checks), `formats` (the
one table of copies: how each is built and validated), `validate` (parity checks and the
table), `quantize` (int8), `context` (what the steps see), `manifest` (staging, install,
export.json). The CLI imports `config` for --help, which runs this file too: everything heavy
is imported inside the functions below.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from digitkit.errors import ModelError, ValidationError
from digitkit.export.config import DEFAULT_ATOL, DEFAULT_N_IMAGES, ExportConfig
from digitkit.model.files import FAILED_SUFFIX, MANIFEST, SOURCE_COPY, identify


def export_model(source: str | os.PathLike, config: ExportConfig | None = None,
                 echo=None) -> dict:
    """Export, validate and write the manifest; return it.

    Raises ValidationError (exit 4) after writing the manifest when any copy fails; the
    exception's `manifest` attribute holds it. `echo(line)` receives progress and the table.
    """
    from digitkit.data import load_mnist
    from digitkit.export.context import ExportContext
    from digitkit.export.manifest import build_manifest, install, prepare_target, staging_dir
    from digitkit.export.validate import fill_reference, human_size, make_cases
    from digitkit.model.loading import import_tensorflow, load_keras_model
    from digitkit.outputs import ensure_dir, sha256_file, write_json_atomic

    say = echo or (lambda _line: None)
    config = config if config is not None else ExportConfig()
    t_start = time.perf_counter()
    src = check_source(source)
    target = prepare_target(src, config)
    import_tensorflow("digitkit export")
    src_sha = sha256_file(src)
    model = load_keras_model(src, config.trust_model)  # refuses unsafe models before we write
    mnist = load_mnist(config.data)
    ensure_dir(target.out)
    cases = make_cases(mnist.x_test, config.n_images)
    fill_reference(model, cases)
    say(f"loaded {src} ({human_size(src.stat().st_size)}), sha256 {src_sha[:12]}; "
        f"validating on {len(cases[0].pixels)} MNIST test images + {len(cases) - 1} edge batches")

    with staging_dir(target.out) as staging:
        ctx = ExportContext(config, src, model, staging, cases, mnist, src_sha)
        results = _build_and_validate(ctx, say)
        artifacts = install(target, staging, results)

    manifest = build_manifest(ctx, target, artifacts, results, time.perf_counter() - t_start)
    write_json_atomic(target.out / MANIFEST, manifest)
    _report(say, manifest, results)
    if manifest["status"] != "passed":
        bad = ", ".join(name for name, r in results.items() if not r.ok)
        err = ValidationError(f"{target.out}: validation failed for {bad}; failing copies "
                              f"were moved aside as *{FAILED_SUFFIX} (see "
                              f"{target.out / MANIFEST})")
        err.manifest = manifest
        raise err
    return manifest


def check_source(path: str | os.PathLike) -> Path:
    """The Keras .h5 model to export: the export directory holds it as model.h5, so nothing
    else is accepted. Cheap checks only (no import); the file kind comes from the model layer.
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such file")
    if p.is_dir():
        raise ModelError(f"{p}: is a directory, expected a Keras .h5 model file")
    if p.suffix.lower() not in (".h5", ".hdf5"):
        got = f"a '{p.suffix}' file" if p.suffix else "a file without an extension"
        raise ModelError(f"{p}: expected a Keras HDF5 model (.h5), got {got}")
    return identify(p).path  # checks the HDF5 signature


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
        done = fmt.done.format(opset=ctx.config.opset, test_images=ctx.test_images)
        say(f"{fmt.name}: {done} in {time.perf_counter() - t:.1f} s")
    return results


def _report(say, manifest: dict, results: dict) -> None:
    from digitkit.export.manifest import format_artifacts
    from digitkit.export.validate import format_table

    keras = manifest["config"]["versions"].get("keras", "?")
    say("")
    say(format_table(list(results.values()), reference=f"keras (keras {keras})"))
    say("")
    for line in format_artifacts(manifest["artifacts"]):
        say(line)


def validate_export_dir(export_dir: str | os.PathLike, data=None, atol: float = DEFAULT_ATOL,
                        n_images: int = DEFAULT_N_IMAGES, trust_model: bool = False) -> list:
    """Re-check an existing export directory against its own model.h5 (no files written).

    Runs the export's own validate steps on the float copies present (--format's); the int8
    copy is held to test accuracy, which the export measured and recorded.
    """
    from digitkit.data import load_mnist
    from digitkit.export.context import ExportContext
    from digitkit.export.formats import EXPORT_FORMATS
    from digitkit.export.validate import fill_reference, make_cases
    from digitkit.model.loading import load_keras_model

    root = Path(export_dir)
    if not (root / SOURCE_COPY).exists():
        raise ModelError(f"{root}: no {SOURCE_COPY} here; not a digitkit export directory")
    config = ExportConfig(atol=atol, n_images=n_images, data=data, trust_model=trust_model)
    mnist = load_mnist(data)
    cases = make_cases(mnist.x_test, n_images)
    model = load_keras_model(root / SOURCE_COPY, trust_model)
    fill_reference(model, cases)
    ctx = ExportContext(config, root / SOURCE_COPY, model, root, cases, mnist)
    return [fmt.validate(ctx, ctx.path(fmt.name)) for fmt in EXPORT_FORMATS.values()
            if fmt.quantize is None and ctx.path(fmt.name).exists()]


__all__ = ["ExportConfig", "check_source", "export_model", "validate_export_dir"]
