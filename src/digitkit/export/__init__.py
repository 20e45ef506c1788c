"""Export a Keras .h5 model to a SavedModel, ONNX and LiteRT, validated against the source.

Layout of the export directory (names in digitkit.model.files; other commands read it):

    model.h5          copy of the source, so the directory is self-contained
    saved_model/      SavedModel, signature "serving_default": pixels (None,28,28) float32
                      -> probabilities (None,10)
    model.onnx        ONNX, dynamic batch dimension, metadata_props describing the contract
    model.int8.onnx   only with quantize="int8"
    model.tflite      LiteRT flatbuffer (weights frozen), signature "serving_default"
    export.json       manifest: artifacts (path, format, size, sha256, validation), config

The room: `config` (ExportConfig, defaults and their reasons, option checks), `formats` (the
one table of copies: how each is built and validated), `validate` (parity checks and the
table), `quantize` (int8), `tflite` (the LiteRT conversion and its check), `context` (what
the steps see), `manifest` (staging, install, export.json). The CLI imports `config` for
--help, which runs this file too: everything heavy is imported inside the functions below.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

from digitkit.errors import ModelError, ValidationError
from digitkit.export.config import DEFAULT_ATOL, DEFAULT_N_IMAGES, DEFAULT_RTOL, ExportConfig
from digitkit.export.formats import FORMATS
from digitkit.export.source import check_source
from digitkit.model.files import FAILED_SUFFIX, MANIFEST, ONNX, SOURCE_COPY


def export_model(source: str | os.PathLike, config: ExportConfig | None = None,
                 echo=None) -> dict:
    """Export, validate and write the manifest; return it.

    Raises ValidationError (exit 4) after writing the manifest when any copy fails; the
    exception's `manifest` attribute holds it. `echo(line)` receives progress and the table.
    """
    from digitkit.artifacts import ensure_dir, write_json_atomic
    from digitkit.data import load_mnist
    from digitkit.export import source as sources
    from digitkit.export.context import ExportContext
    from digitkit.export.manifest import build_manifest, install, prepare_target, staging_dir
    from digitkit.export.validate import fill_reference, human_size, make_cases
    from digitkit.model.loading import import_tensorflow, load_keras_model
    from digitkit.predictors.adapted import load_source, source_sha256

    say = echo or (lambda _line: None)
    config = config if config is not None else ExportConfig()
    t_start = time.perf_counter()
    src_file = check_source(source)
    src = src_file.path
    formats = sources.check_formats(src_file, config.formats, config.formats == FORMATS)
    if formats != config.formats:
        dropped = ", ".join(f for f in config.formats if f not in formats)
        say(f"an ONNX source becomes ONNX copies only (no TensorFlow graph): skipping {dropped}")
    config = replace(config, formats=formats)
    target = prepare_target(src, config, sources.SOURCE_COPIES[src_file.kind],
                            sources.SOURCE_FORMATS[src_file.kind])
    if src_file.kind != ONNX:  # an ONNX source's copies are ONNX graphs: no TensorFlow
        import_tensorflow("digitkit export")
    src_sha = source_sha256(src)
    foreign = None
    if sources.own_model(src_file, config):
        model = load_keras_model(src, config.trust_model)  # refuses unsafe models before we write
        mnist = load_mnist(config.data)
    else:  # made elsewhere: load (as strict about code), resolve its convention, wrap it
        loaded = load_source(src, config.trust_model)
        mnist = load_mnist(config.data)
        foreign = sources.open_export_source(loaded, config, mnist, say)
        model = foreign.model
    ensure_dir(target.out)
    cases = make_cases(mnist.x_test, config.n_images)
    if foreign is None:
        fill_reference(model, cases)
    else:
        foreign.fill_reference(cases)  # the source under its own convention
    say(f"loaded {src} ({human_size(_size(src))}), sha256 {src_sha[:12]}; "
        f"validating on {len(cases[0].pixels)} MNIST test images + {len(cases) - 1} edge batches")

    with staging_dir(target.out) as staging:
        ctx = ExportContext(config, src, model, staging, cases, mnist, src_sha, foreign=foreign)
        if foreign is not None:
            ctx._source_accuracy = foreign.accuracy  # what LiteRT's accuracy check holds to
        results = _build_and_validate(ctx, say)
        if foreign is not None:
            sources.add_copy_accuracies(ctx, results)
        artifacts = install(target, staging, results)

    manifest = build_manifest(ctx, target, artifacts, results, time.perf_counter() - t_start)
    write_json_atomic(target.out / MANIFEST, manifest)
    reference = None if foreign is None else foreign.reference_label()
    _report(say, manifest, results, reference)
    if manifest["status"] != "passed":
        bad = ", ".join(name for name, r in results.items() if not r.ok)
        err = ValidationError(f"{target.out}: validation failed for {bad}; failing copies "
                              f"were moved aside as *{FAILED_SUFFIX} (see "
                              f"{target.out / MANIFEST})")
        err.manifest = manifest
        raise err
    return manifest


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
        done = fmt.done.format(opset=ctx.config.opset, test_images=ctx.test_images)
        if fmt.name == "onnx" and ctx.foreign is not None and ctx.foreign.is_onnx:
            done = "adapter nodes added to the source's graph, checked and validated"
        say(f"{fmt.name}: {done} in {time.perf_counter() - t:.1f} s")
    return results


def _report(say, manifest: dict, results: dict, reference: str | None = None) -> None:
    from digitkit.export.manifest import format_artifacts
    from digitkit.export.validate import format_table

    keras = manifest["config"]["versions"].get("keras", "?")
    say("")
    say(format_table(list(results.values()), reference=reference or f"keras (keras {keras})"))
    say("")
    for line in format_artifacts(manifest["artifacts"]):
        say(line)


def validate_export_dir(export_dir: str | os.PathLike, data=None, atol: float = DEFAULT_ATOL,
                        n_images: int = DEFAULT_N_IMAGES, trust_model: bool = False,
                        rtol: float = DEFAULT_RTOL) -> list:
    """Re-check an existing export directory against its own source copy (no files written):
    model.h5, or for a model made elsewhere the copy export.json names, run under the input
    convention export.json records.

    Runs the export's own validate steps on the float copies present (--format's); the int8
    copy is held to test accuracy, which the export measured and recorded.
    """
    import json

    from digitkit.data import load_mnist
    from digitkit.export.context import ExportContext
    from digitkit.export.formats import EXPORT_FORMATS
    from digitkit.export.validate import fill_reference, make_cases
    from digitkit.model.loading import load_keras_model

    root = Path(export_dir)
    manifest = root / MANIFEST
    recorded = (json.loads(manifest.read_text()).get("source") or {}) if manifest.is_file() else {}
    copy = root / recorded.get("copy", SOURCE_COPY)
    if not copy.exists():
        raise ModelError(f"{root}: no {copy.name} here; not a digitkit export directory")
    config = ExportConfig(atol=atol, rtol=rtol, n_images=n_images, data=data,
                          trust_model=trust_model)
    mnist = load_mnist(data)
    cases = make_cases(mnist.x_test, n_images)
    foreign = None
    if recorded.get("convention"):
        from digitkit.export.source import recorded_source

        foreign = recorded_source(copy, recorded["convention"], trust_model)
        foreign.fill_reference(cases)
        model = None
    else:
        model = load_keras_model(copy, trust_model)
        fill_reference(model, cases)
    ctx = ExportContext(config, copy, model, root, cases, mnist, foreign=foreign)
    if foreign is not None:
        ctx._source_accuracy = foreign.measure(mnist.x_test, mnist.y_test)
    return [fmt.validate(ctx, ctx.path(fmt.name)) for fmt in EXPORT_FORMATS.values()
            if fmt.quantize is None and ctx.path(fmt.name).exists()]


__all__ = ["ExportConfig", "check_source", "export_model", "validate_export_dir"]
