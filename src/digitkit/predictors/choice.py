"""`infer --runtime auto`: the fastest runtime and precision that is as accurate as fp32.

`choose` decides once, in infer's main process, before any work:

1. Candidates: every row of the runtime table that can serve MODEL (the copy it loads is
   there: an export directory's own copies, or the one file given) at a precision
   `--precision` allows (`any`: all of them) on `--device`. The TensorFlow rows are not
   candidates: they exist to compare against, and TensorFlow runs only in infer's main
   process. A copy of an export directory is a candidate only if export.json records it as
   passed validation and its sha256 is still the one validated; a row whose extra is not
   installed (the row's `unavailable()`) is skipped, and the next fastest serves instead.
2. The gate (`GATE`): on `CHECK_IMAGES` MNIST test images, a candidate's top-1 agreement
   with the fp32 reference (the first fp32 row in table order, normally ONNX Runtime on the
   ONNX copy) must be at least `MIN_AGREEMENT` (`compare.agreement`, the rule export
   validation and bench follow), and its accuracy at most `MAX_ACCURACY_DROP_POINTS` below the
   reference's. A candidate that fails is never chosen, however fast.
3. Speed: each candidate that passes is timed as infer runs it: at infer's batch size, in a
   process of one thread when worker processes run the model (each worker is one core), or of
   every usable core with `--workers 0`; `predictors.timing.time_batch`, bench's own timing,
   in `ROUNDS` interleaved rounds (the best round counts: outside load only slows a round).
4. The fastest wins. Its evidence (every candidate's figures, what was refused and why) is
   said once on stderr and recorded with the result file (`Choice.record`).

Steps 2-3 are a calibration of a few seconds, said on stderr before it starts. Its result
is cached (`cache_path`: a small JSON file under digitkit's cache directory, written
atomically) under a key of everything it depends on: the sha256 of every candidate copy,
batch size, threads, device, the precisions allowed, the gate, this machine (CPU model and
core counts) and the runtimes' versions. The next run with the same key reads it and does
not calibrate; a runtime made unavailable since is skipped from the cached ranking.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from digitkit.errors import (
    DependencyError,
    DigitkitError,
    ModelError,
    UsageError,
    one_line,
)
from digitkit.predictors.devices import DEFAULT_DEVICE, device_kind
from digitkit.predictors.runtimes import RUNTIMES, Runtime

#: `--runtime auto` and `--precision any`.
AUTO = "auto"
ANY_PRECISION = "any"
#: The gate (see the module docstring). 99.9% top-1 agreement is bench's float threshold
#: (`bench.config.FLOAT_AGREEMENT`): float copies of one model disagree only on near-ties, and
#: a reduced precision held to it is as good as fp32 for this model; the accuracy bound keeps
#: those few disagreements from all going one way.
MIN_AGREEMENT = 0.999
MAX_ACCURACY_DROP_POINTS = 0.1
GATE = {"min_top1_agreement": MIN_AGREEMENT,
        "max_accuracy_drop_points": MAX_ACCURACY_DROP_POINTS}
#: Check images: 2,000 MNIST test images make 99.9% mean at most two disagreements, and every
#: candidate classifies them in well under a second.
CHECK_IMAGES = 2000
#: Timing: interleaved rounds of ROUND_SECONDS per candidate; with four or five candidates a
#: calibration takes a few seconds in all, loads included.
ROUNDS = 3
ROUND_SECONDS = 0.25
#: Groups that are never candidates (see the module docstring).
_NOT_CANDIDATES = ("tensorflow", "keras")
#: Where the records live, under digitkit's cache directory (digitkit.data.cache_dir).
CACHE_DIR = "runtime-choice"
RECORD_VERSION = 1
#: The distributions whose versions are part of the key: a new runtime version is new speed.
_KEY_PACKAGES = ("numpy", "onnxruntime", "onnxruntime-gpu", "openvino", "ai-edge-litert")
#: A record is a few kilobytes; anything larger is not ours.
_MAX_RECORD = 1 << 20


@dataclass(frozen=True)
class Candidate:
    """A row of the runtime table on one copy of MODEL."""

    row: Runtime
    path: Path
    sha256: str


@dataclass
class Candidates:
    """What `candidates` found: `runnable` (may be timed), `reference` (the fp32 row the gate
    compares against; None when MODEL has no fp32 copy), `excluded` ({row name: why not})."""

    runnable: list[Candidate]
    reference: Candidate | None
    excluded: dict[str, str] = field(default_factory=dict)
    loose: bool = False  # a model file, not an export directory: no export validation
    #: {row name: sha256 of its copy} of every row with a copy at an allowed precision,
    #: runnable here or not: the cache key, which a runtime made unavailable leaves as it was
    copies: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Choice:
    """The chosen row (`runtime`, its `group` and `precision`) on its copy `path`; `line`, the
    evidence as said on stderr; `record`, the evidence as the result file records it."""

    runtime: str
    group: str
    precision: str
    path: Path
    line: str
    record: dict
    sha256: str = ""  # of `path`, hashed once: the result file's record names it too


def allowed_precisions(precision: str) -> tuple[str, ...]:
    from digitkit.predictors.serving import precisions

    return precisions() if precision == ANY_PRECISION else (precision,)


def candidates(model: str | os.PathLike, precision: str = "fp32",
               device: str = DEFAULT_DEVICE, trust_model: bool = False) -> Candidates:
    """The candidates for `model` at `precision` (or `any`) on `device` (module docstring)."""
    from digitkit.artifacts import sha256_file
    from digitkit.model.files import (
        SAVEDMODEL,
        ModelCopies,
        identify,
        is_export_dir,
        read_export_dir,
    )

    allowed = allowed_precisions(precision)
    p = Path(model)
    loose = not is_export_dir(p)
    if loose:
        file = identify(p)
        if file.is_keras or file.kind == SAVEDMODEL:
            raise UsageError(f"{p}: --runtime auto chooses among the ONNX and LiteRT copies of "
                             "a model; give its export directory, an .onnx or a .tflite file "
                             "(or name --runtime tensorflow)")
        _refuse_foreign(file.path, trust_model)
        copies = ModelCopies(name=file.path.name)
        copies.add(file)
    else:
        copies = read_export_dir(p)
    artifacts = {a.get("path"): a for a in (copies.manifest.get("artifacts") or {}).values()
                 if isinstance(a, dict)}
    runnable, excluded, reference, hashes, keyed = [], {}, None, {}, {}
    for row in RUNTIMES.values():
        path = getattr(copies, row.copy)
        if row.group in _NOT_CANDIDATES or path is None:
            continue
        if row.precision not in allowed and not (reference is None
                                                 and row.precision == "fp32"):
            continue  # neither allowed nor the reference: not even asked if it runs here
        if path not in hashes:
            hashes[path] = sha256_file(path)
        why = None if loose else _not_validated(path, hashes[path], artifacts)
        why = why or row.unavailable()
        if why is None and device_kind(device) != DEFAULT_DEVICE:
            try:
                row.check_device(device)  # the row has no such device, or it is not there
            except (UsageError, DependencyError) as err:
                why = err.message.removeprefix(f"--device {device}: ")
        cand = Candidate(row, path, hashes[path])
        if why is None and reference is None and row.precision == "fp32":
            reference = cand  # the gate's reference, whether or not fp32 is allowed
        if row.precision not in allowed:
            continue
        keyed[row.name] = hashes[path]
        if why is not None:
            excluded[row.name] = why
        else:
            runnable.append(cand)
    if not runnable:
        detail = "; ".join(f"{k}: {v}" for k, v in excluded.items()) or (
            f"it has no copy a runtime runs at {' or '.join(allowed)}")
        raise ModelError(f"{p}: --runtime auto has nothing to choose from ({detail})")
    return Candidates(runnable, reference, excluded, loose, keyed)


def _not_validated(path: Path, sha256: str, artifacts: dict) -> str | None:
    """Why an export directory's copy may not serve `auto`, or None when export.json records
    it as passed validation with the sha256 it has now."""
    art = artifacts.get(path.name)
    if art is None:
        return "export.json has no validation record for it"
    status = (art.get("validation") or {}).get("status", art.get("status"))
    if art.get("status") != "passed" or status != "passed":
        return f"export validation: {status or art.get('status')}"
    if art.get("sha256") != sha256:
        return "changed since export validation (sha256 differs from export.json)"
    return None


def _refuse_foreign(path: Path, trust_model: bool) -> None:
    from digitkit.predictors.adapted import FOREIGN, contract_status

    if path.suffix.lower() == ".onnx" and contract_status(path, trust_model)[0] == FOREIGN:
        raise UsageError(f"{path}: a model made elsewhere runs through digitkit's adapter; "
                         "--runtime auto compares digitkit's own copies (name a --runtime, or "
                         "export it and give the export directory)")


# -- the cache ------------------------------------------------------------------------------


def machine() -> dict:
    """What a timing depends on besides the model: the CPU, its cores, the runtimes."""
    from digitkit.environment import cpu_model, library_versions, usable_cpus

    return {"cpu": cpu_model(), "usable_cpus": usable_cpus(), "cpu_count": os.cpu_count(),
            "versions": library_versions(_KEY_PACKAGES)}


def cache_key(found: Candidates, precision: str, batch: int, threads: int,
              device: str) -> dict:
    ref = found.reference
    return {"candidates": found.copies,
            "reference": None if ref is None else {ref.row.name: ref.sha256},
            "precisions": list(allowed_precisions(precision)), "batch": batch,
            "threads": threads, "device": device, "check_images": CHECK_IMAGES, "gate": GATE,
            "machine": machine()}


def cache_path(key: dict) -> Path:
    from digitkit.data import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_dir() / CACHE_DIR / f"{digest[:32]}.json"


def read_cached(path: Path, key: dict, found: Candidates) -> dict | None:
    """The record at `path` when it is one of ours for `key` and measured every candidate
    that can run now, else None (then calibrate again)."""
    from digitkit.inputs import open_regular

    try:
        with open_regular(path, _MAX_RECORD) as f:
            record = json.loads(f.read())
    except Exception:  # noqa: BLE001 - missing, unreadable or not JSON: measure again
        return None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION \
            or record.get("key") != key or not isinstance(record.get("results"), list):
        return None
    measured = {r.get("runtime") for r in record["results"] if isinstance(r, dict)}
    if any(c.row.name not in measured for c in found.runnable):
        return None  # a runtime installed since it was measured
    return record


# -- calibration ----------------------------------------------------------------------------


def calibrate(found: Candidates, x, y, batch: int, threads: int, spinning: bool | None,
              device: str, trust_model: bool = False) -> list[dict]:
    """Every runnable candidate's gate figures and speed (module docstring, steps 2-3)."""
    import numpy as np

    from digitkit.predictors.compare import agreement
    from digitkit.predictors.runtimes import open_runtime
    from digitkit.predictors.timing import time_batch

    def outputs(predictor):
        return np.concatenate([predictor.predict(x[i:i + batch])
                               for i in range(0, len(x), batch)])

    def accuracy(out) -> float:
        return float(np.mean(out.argmax(axis=1) == y))

    results, loaded = [], {}
    reference_out = ref_acc = None
    order = list(found.runnable)
    if found.reference is not None and found.reference not in order:
        order.insert(0, found.reference)  # the reference, even where fp32 is not allowed
    for cand in order:
        try:
            predictor = open_runtime(cand.row.name, cand.path, threads, spinning, trust_model,
                                     device).load()
            out = outputs(predictor)
            if out.shape != (len(x), 10):
                raise ModelError(f"outputs of shape {out.shape}, not ({len(x)}, 10)")
        except Exception as err:  # noqa: BLE001 - a runtime's own error on these images
            why = err.message if isinstance(err, DigitkitError) else one_line(err)
            if cand is found.reference:
                raise ModelError(f"{cand.path}: --runtime auto holds every copy to "
                                 f"{cand.row.name} on MNIST test digits, which it cannot run "
                                 f"({why}); name a --runtime") from err
            results.append(_result(cand, refused=f"failed to run: {why}"))
            continue
        if cand is found.reference:
            reference_out, ref_acc = out, accuracy(out)
        if cand not in found.runnable:
            continue
        res = _result(cand)
        res["accuracy"] = accuracy(out)
        if reference_out is not None:
            agree = agreement(out, reference_out)
            res["top1_agreement"] = agree.top1_fraction
            drop = (ref_acc - res["accuracy"]) * 100
            if not agree.finite:
                res["refused"] = "non-finite outputs"
            elif agree.top1_fraction < MIN_AGREEMENT:
                res["refused"] = (f"top-1 agreement {agree.top1_fraction:.2%} < "
                                  f"{MIN_AGREEMENT:.1%}")
            elif drop > MAX_ACCURACY_DROP_POINTS + 1e-9:
                res["refused"] = (f"accuracy {res['accuracy']:.2%}, {drop:.2f} points below "
                                  f"the reference (at most {MAX_ACCURACY_DROP_POINTS})")
        results.append(res)
        if res["refused"] is None:
            loaded[cand.row.name] = predictor
    xs = np.ascontiguousarray(x, dtype=np.float32)
    for r in range(ROUNDS):  # interleaved: a burst of outside load hits every candidate alike
        for res in results:
            predictor = loaded.get(res["runtime"])
            if predictor is None:
                continue
            t = time_batch(predictor.predict, xs, batch, warmup=2 if r == 0 else 0,
                           duration=ROUND_SECONDS, iterations=None)
            res["images_per_s"] = max(res["images_per_s"] or 0.0, t["images_per_s"])
    return results


def _result(cand: Candidate, refused: str | None = None) -> dict:
    return {"runtime": cand.row.name, "group": cand.row.group, "precision": cand.row.precision,
            "copy": cand.path.name, "sha256": cand.sha256, "accuracy": None,
            "top1_agreement": None, "images_per_s": None, "refused": refused}


def pick(results: list[dict], found: Candidates,
         allowed: tuple[str, ...]) -> tuple[dict | None, dict[str, str]]:
    """(the fastest result that passed the gate and whose row is a candidate now, {row: why
    it was passed over} for those above it that are not: not installed since, say, or no
    longer passed by export.json)."""
    now = {c.row.name for c in found.runnable}
    skipped = {}
    ranked = sorted((r for r in results if r["refused"] is None and r["images_per_s"]
                     and r["precision"] in allowed and r["runtime"] in RUNTIMES),
                    key=lambda r: -r["images_per_s"])
    for res in ranked:
        why = found.excluded.get(res["runtime"]) if res["runtime"] not in now \
            else RUNTIMES[res["runtime"]].unavailable()
        if why is None and res["runtime"] in now:
            return res, skipped
        skipped[res["runtime"]] = why or "not a candidate now"
    return None, skipped


def choose(model: str | os.PathLike, precision: str = "fp32", *, batch: int,
           workers: int | None, device: str = DEFAULT_DEVICE, data=None,
           trust_model: bool = False, convention=None,
           say: Callable[[str], None] = lambda line: None) -> Choice:
    """The row and copy that serve `model` under `--runtime auto` (module docstring);
    `convention`: the --input-* flags (`ConventionFlags`), which auto refuses."""
    from digitkit.environment import usable_cpus
    from digitkit.predictors.serving import worker_regime

    if convention is not None and convention.given:
        raise UsageError(f"{', '.join(convention.given)}: the input flags are for a model made "
                         "elsewhere, which runs through digitkit's adapter on the runtime you "
                         "name; --runtime auto compares digitkit's own copies")
    found = candidates(model, precision, device, trust_model)
    if found.runnable == [found.reference]:  # nothing to compare it with: nothing to measure
        only = _only(found)
        say(f"digitkit: {only.line}")
        return only
    # As infer runs the model: one core per worker process (or Ray actor), or every usable
    # core in this process with --workers 0 (ONNX Runtime then per regime, as infer does).
    threads, spinning = (usable_cpus(), None) if workers == 0 else worker_regime(batch)
    key = cache_key(found, precision, batch, threads, device)
    path = cache_path(key)
    record = read_cached(path, key, found)
    if record is None:
        record = _calibrate_and_cache(found, key, path, batch, threads, spinning, device, data,
                                      trust_model, say)
    chosen, passed_over = pick(record["results"], found, allowed_precisions(precision))
    if chosen is None:
        raise ModelError(f"{model}: --runtime auto: no candidate passes the gate and can run "
                         "here (" + "; ".join(
                             f"{r['runtime']}: {r['refused'] or passed_over.get(r['runtime'])}"
                             for r in record["results"]) + ")")
    line = _evidence(record, chosen, found, passed_over, path, threads)
    say(f"digitkit: {line}")
    evidence = {"chosen": chosen["runtime"], "precision": chosen["precision"],
                "batch": batch, "threads": threads, "device": device,
                "reference": record["reference"], "gate": GATE,
                "check_images": record["check_images"],
                "results": [{k: r[k] for k in ("runtime", "precision", "images_per_s",
                                               "top1_agreement", "accuracy", "refused")}
                            for r in record["results"]],
                "not_candidates": {**found.excluded, **passed_over},
                "measured": record["created"], "record": str(path)}
    row = RUNTIMES[chosen["runtime"]]
    cand = next(c for c in found.runnable if c.row.name == row.name)
    return Choice(row.name, row.group, row.precision, cand.path, line, evidence, cand.sha256)


def _only(found: Candidates) -> Choice:
    cand = found.reference
    row = cand.row
    line = (f"--runtime auto: {row.name} ({row.precision}, {cand.path.name}) is the only "
            "candidate, nothing measured")
    if found.excluded:
        line += "; not candidates: " + ", ".join(f"{k} ({v})" for k, v in found.excluded.items())
    record = {"chosen": row.name, "precision": row.precision, "only_candidate": True,
              "not_candidates": dict(found.excluded)}
    return Choice(row.name, row.group, row.precision, cand.path, line, record, cand.sha256)


def _calibrate_and_cache(found: Candidates, key: dict, path: Path, batch: int, threads: int,
                         spinning, device: str, data, trust_model: bool, say) -> dict:
    from digitkit.artifacts import write_json_atomic
    from digitkit.data import load_mnist

    names = ", ".join(c.row.name for c in found.runnable)
    say(f"digitkit: --runtime auto: calibrating {names} on {CHECK_IMAGES:,} MNIST test images "
        f"at batch {batch} (a few seconds; cached for the next run)")
    start = time.monotonic()
    mnist = load_mnist(data)
    x, y = mnist.x_test[:CHECK_IMAGES].astype("float32"), mnist.y_test[:CHECK_IMAGES]
    results = calibrate(found, x, y, batch, threads, spinning, device, trust_model)
    ref = found.reference
    record = {"version": RECORD_VERSION, "key": key,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "seconds": round(time.monotonic() - start, 2),
              "reference": None if ref is None else ref.row.name,
              "check_images": int(len(x)), "data_source": mnist.source, "results": results}
    try:
        write_json_atomic(path, record)
    except (OSError, DigitkitError) as err:  # a cache that cannot be written costs speed only
        say(f"digitkit: note: --runtime auto: could not cache the calibration at {path} "
            f"({err}); the next run calibrates again")
    record["fresh"] = True
    return record


def _evidence(record: dict, chosen: dict, found: Candidates, passed_over: dict,
              path: Path, threads: int) -> str:
    """The one stderr line: the choice, its figures, the others', and where they came from."""
    def speed(r):
        return f"{r['images_per_s']:,.0f} images/s"

    ref = record["reference"]
    gate = "no fp32 copy to hold it to (it is the only candidate)" if ref is None else (
        f"top-1 agreement {chosen['top1_agreement']:.2%}, accuracy {chosen['accuracy']:.2%} "
        f"against {ref} (gate: >= {MIN_AGREEMENT:.1%} agreement, accuracy within "
        f"{MAX_ACCURACY_DROP_POINTS} points, {record['check_images']:,} MNIST test images)")
    parts = [f"--runtime auto chose {chosen['runtime']} ({chosen['precision']}, "
             f"{chosen['copy']}): {speed(chosen)} at batch {record['key']['batch']} on "
             f"{threads} thread{'s' if threads > 1 else ''}; {gate}"]
    others = [f"{r['runtime']} {speed(r)}" for r in record["results"]
              if r is not chosen and r["refused"] is None and r["images_per_s"]
              and r["runtime"] not in passed_over and r["runtime"] not in found.excluded]
    if others:
        parts.append("others: " + ", ".join(others))
    refused = [f"{r['runtime']} ({r['refused']})" for r in record["results"] if r["refused"]]
    if refused:
        parts.append("refused: " + ", ".join(refused))
    skipped = {**found.excluded, **passed_over}
    if skipped:
        parts.append("not candidates: " + ", ".join(f"{k} ({v})" for k, v in skipped.items()))
    if found.loose:
        parts.append("a model file has no export validation: the gate is all it is held to")
    parts.append(f"calibrated in {record['seconds']:.1f} s, cached in {path}"
                 if record.get("fresh") else f"from the cache ({path})")
    return "; ".join(parts)


__all__ = ["ANY_PRECISION", "AUTO", "CHECK_IMAGES", "GATE", "Candidate", "Candidates", "Choice",
           "calibrate", "candidates", "choose", "pick"]
