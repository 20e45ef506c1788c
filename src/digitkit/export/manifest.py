"""Where an export goes, how its copies are staged and installed, and export.json.

Artifacts are written to a staging directory inside the export directory and moved into
place only once they pass validation; a copy that fails is moved aside as `<name>.FAILED`
and the manifest says so, so nothing that failed ever sits under a good-looking name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from digitkit import __version__
from digitkit.artifacts import guard_output, sha256_file, sha256_tree
from digitkit.environment import library_versions
from digitkit.errors import ModelError
from digitkit.export.config import DEFAULT_OUT_DIR_NAME, ExportConfig
from digitkit.export.formats import EXPORT_FORMATS, selected
from digitkit.export.validate import human_size
from digitkit.model.files import FAILED_SUFFIX, MANIFEST, SOURCE_COPY

#: The distributions export.json names (with Python and digitkit): the ones whose versions
#: change a converted graph or a validation figure.
EXPORT_PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime",
                   "ai-edge-litert", "numpy")


@dataclass(frozen=True)
class Target:
    """The export directory of one run and what the run may replace in it."""

    out: Path
    source: Path
    force: bool
    same_source: bool  # out/model.h5 is the source itself: re-exporting in place
    copy: str = SOURCE_COPY  # the source's copy in `out` (digitkit.export.origin.SOURCE_COPIES)
    copy_format: str = "keras-h5"  # its "format" in export.json

    def planned(self, config: ExportConfig) -> list[str]:
        names = [f.file for f in selected(config.formats, config.quantize)] + [MANIFEST]
        return names if self.same_source else names + [self.copy]


def prepare_target(source: Path, config: ExportConfig, copy: str = SOURCE_COPY,
                   copy_format: str = "keras-h5") -> Target:
    """The export directory, refusing (before any work) to overwrite without --force."""
    if config.out_dir is not None:
        out = Path(config.out_dir)
    else:
        out = source.resolve().parent / DEFAULT_OUT_DIR_NAME
    held = out / copy
    target = Target(out, source, config.force,
                    same_source=held.exists() and held.resolve() == source.resolve(),
                    copy=copy, copy_format=copy_format)
    if out.exists() and not out.is_dir():
        raise ModelError(f"{out}: exists and is not a directory")
    for name in target.planned(config):
        guard_output(out / name, config.force)
    return target


@contextmanager
def staging_dir(out: Path):
    """A private directory inside `out`, so installing a copy is a rename on one file system."""
    staging = Path(tempfile.mkdtemp(prefix=".export-", suffix=".tmp", dir=out))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def install(target: Target, staging: Path, results: dict, contract) -> dict[str, dict]:
    """Move each copy into place if it passed, or aside as .FAILED; return artifact records
    (each with its format's fixed keys under `contract`, the copies' ModelContract)."""
    out = target.out
    artifacts: dict[str, dict] = {}
    if target.force:
        # Under --force the directory is ours to rewrite: drop copies from earlier runs so
        # nothing remains that export.json does not describe.
        for fmt in EXPORT_FORMATS.values():
            for stale in (out / fmt.file, out / (fmt.file + FAILED_SUFFIX)):
                _remove(stale)
    if not target.same_source:
        tmp = staging / target.copy
        if target.source.is_dir():  # a SavedModel source
            shutil.copytree(target.source, tmp)
        else:
            shutil.copyfile(target.source, tmp)
        _remove(out / target.copy)
        os.replace(tmp, out / target.copy)
    key = "keras" if target.copy_format.startswith("keras") else "source"
    artifacts[key] = _record(out, target.copy, target.copy_format, "source")
    for name, res in results.items():
        fmt = EXPORT_FORMATS[name]
        built = staging / fmt.file
        if not built.exists():
            artifacts[name] = {"path": None, "format": name, "size_bytes": 0, "sha256": "",
                               "status": "failed"}
            continue
        final = fmt.file if res.ok else fmt.file + FAILED_SUFFIX
        _remove(out / final)
        if not res.ok:
            _remove(out / fmt.file)  # an older good-looking copy must not outlive a failed one
        os.replace(built, out / final)
        artifacts[name] = _record(out, final, name, "passed" if res.ok else "failed")
        artifacts[name].update(fmt.record(contract))
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
    if p.is_dir():
        # The method's name as manifests have always recorded it (now digitkit.artifacts).
        rec["sha256_method"] = "digitkit.outputs.sha256_tree (relative paths + file sha256s)"
    return rec


def build_manifest(ctx, target: Target, artifacts: dict, results: dict,
                   seconds: float) -> dict:
    """export.json: the source, the contract (its JSON form), the options and versions, and
    every copy with its validation (`ctx` is the run's ExportContext). A general image
    classifier's also records its calibration folder ("calibration": folder, images per
    class, skipped files, the pixel policy they were decoded by; folder null without one)
    and, under "source", where its class names and pixel policy came from."""
    config = ctx.config
    for name, res in results.items():
        artifacts[name]["validation"] = res.to_dict()
        artifacts[name].update(res.extra)
    ok = all(r.ok for r in results.values())
    return {
        "digitkit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "passed" if ok else "failed",
        "export_dir": str(target.out.resolve()),
        "source": {"path": str(ctx.source), "sha256": ctx.source_sha256, "copy": target.copy,
                   **ctx.origin.record()},
        "model": ctx.contract.to_dict(),
        **({} if ctx.contract.is_digit else {"calibration": ctx.data.record}),
        "config": {
            "formats": list(config.formats),
            "opset": config.opset if "onnx" in config.formats else None,
            "atol": config.atol,
            "rtol": config.rtol,
            "source_sha256": ctx.source_sha256,
            "quantize": config.quantize,
            "max_accuracy_drop_points": config.max_accuracy_drop if config.quantize else None,
            "validation_images": config.n_images,
            "data_source": ctx.data.source,
            "versions": library_versions(EXPORT_PACKAGES),
        },
        "artifacts": artifacts,
        "seconds": round(seconds, 2),
    }


def format_artifacts(artifacts: dict) -> list[str]:
    """The closing list of what is in the directory, one line per file."""
    lines = [f"  {a['path'] or '-':<22} {a['format']:<11} {human_size(a['size_bytes']):>9}  "
             f"sha256 {a['sha256'][:16]}  {a['status']}" for a in artifacts.values()]
    return lines + [f"  {MANIFEST:<22} manifest"]


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()
