"""`infer --runtime auto`: the fastest runtime and precision that is as accurate as fp32.

`choose` decides once, in infer's main process, before any work:

1. Candidates: every row of the runtime table that can serve MODEL (the copy it loads is
   there: an export directory's own copies, or the one file given) at a precision
   `--precision` allows (`any`: all of them) on `--device`. The TensorFlow rows are not
   candidates: they exist to compare against, and TensorFlow runs only in infer's main
   process. A copy of an export directory is a candidate only if export.json records it as
   passed validation and its sha256 is still the one validated; a row whose extra is not
   installed (the row's `unavailable()`) is skipped, and the next fastest serves instead.
2. The gate (`GATE`): on the check images (`check_images`), a candidate's top-1 agreement
   with the fp32 reference (the first fp32 row in table order, normally ONNX Runtime on the
   ONNX copy) must be at least `MIN_AGREEMENT` (`compare.agreement`, the rule export
   validation and bench follow), and its accuracy at most `MAX_ACCURACY_DROP_POINTS` below the
   reference's. A candidate that fails is never chosen, however fast.
   The check images follow the model's contract: a digit model's are the first
   `CHECK_IMAGES` MNIST test images; any other classifier's come from a labelled folder (one
   subfolder per class, matched by name to the contract's class names), `infer --calibration
   DIR` or else the folder export.json records under "calibration" while it is still there,
   decoded by the contract's pixel policy exactly as export decodes it
   (`model.detect.load_calibration`), at most `per_class_cap` files per class (`CHECK_IMAGES`
   spread over the classes). Without a folder auto cannot hold a copy to the gate, and says
   so in one line naming --calibration.
3. Speed: each candidate that passes is timed as infer runs it: at infer's batch size, in a
   process of one thread when worker processes run the model (each worker is one core), or of
   every usable core with `--workers 0`; `predictors.timing.time_batch`, bench's own timing,
   in `ROUNDS` interleaved rounds (the best round counts: outside load only slows a round).
4. The fastest wins. Its evidence (every candidate's figures, what was refused and why) is
   said once on stderr and recorded with the result file (`Choice.record`).

Steps 2-3 are a calibration, said on stderr before it starts: every candidate classifies the
check images once, then ROUNDS timed rounds of at least one batch: seconds for a digit model,
minutes for a 224x224 one on few cores, where a single batch takes seconds (BENCHMARKS.md, "A
224x224x3 model: every runtime side by side"). Its result
is cached (`cache_path`: a small JSON file under digitkit's cache directory, written
atomically) under a key of everything it depends on: the sha256 of every candidate copy,
batch size, threads, device, the options each runtime is opened with (`run_options`: the
predictors' own `options()`), the precisions allowed, the gate, the check images (MNIST's
count, or the folder, its per-class cap and a hash of its files' names, classes, sizes and
mtimes: another folder, or a file added or changed, recalibrates), this machine (CPU model
and core counts) and the runtimes' versions. The next run with the same key reads it and does
not calibrate; a runtime made unavailable since is skipped from the cached ranking.
"""

from __future__ import annotations

import hashlib
import json
import math
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
#: candidate classifies them in well under a second. A general classifier's folder gives at
#: most as many, spread evenly over its classes (`per_class_cap`).
CHECK_IMAGES = 2000
#: Timing: interleaved rounds of ROUND_SECONDS (and at least one call) per candidate; with
#: four or five candidates of a digit model a calibration takes a few seconds in all.
ROUNDS = 3
ROUND_SECONDS = 0.25
#: Groups that are never candidates (see the module docstring).
_NOT_CANDIDATES = ("tensorflow", "keras")
#: Where the records live, under digitkit's cache directory (digitkit.data.cache_dir).
CACHE_DIR = "runtime-choice"
RECORD_VERSION = 2  # 2: the check images' source is recorded and keyed
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
    #: {row name: its copy} of the same rows, and the reference's: what `cache_key` asks each
    #: row's predictor for the options it would run with
    paths: dict[str, Path] = field(default_factory=dict)


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


@dataclass(frozen=True)
class AutoRequest:
    """What a run asks of `--runtime auto`: `batch` (infer's --batch-size), `precision`
    (--precision: one, or `any`), `workers` (infer's: 0 runs the model in the main process on
    every usable core, else each worker process is one core), `device`, `trust_model`, and
    where the check images come from: `data` (the MNIST location, digit models) and
    `calibration` (a labelled folder, any other classifier)."""

    batch: int
    precision: str = "fp32"
    workers: int | None = None
    device: str = DEFAULT_DEVICE
    trust_model: bool = False
    data: str | os.PathLike | None = None
    calibration: str | os.PathLike | None = None

    @property
    def allowed(self) -> tuple[str, ...]:
        return allowed_precisions(self.precision)

    def regime(self) -> tuple[int, bool | None]:
        """(threads, spinning) as infer runs the model: one core per worker process (or Ray
        actor), or every usable core in this process with --workers 0 (ONNX Runtime then per
        regime, as infer does)."""
        from digitkit.environment import usable_cpus
        from digitkit.predictors.serving import worker_regime

        return (usable_cpus(), None) if self.workers == 0 else worker_regime(self.batch)


@dataclass(frozen=True)
class CheckImages:
    """Where the gate's labelled images come from (`check_images`): MNIST test images
    (`folder` None) or a labelled folder; `identity`, what the cache key holds of them."""

    contract: object
    folder: str | None = None
    data: str | os.PathLike | None = None
    identity: dict = field(default_factory=dict)

    @property
    def source(self) -> str:
        """What they are, for people: "MNIST test images", "calibration images in DIR"."""
        return "MNIST test images" if self.folder is None \
            else f"calibration images in {self.folder}"

    def planned(self) -> str:
        """What a calibration is about to read, before it is read."""
        if self.folder is None:
            return f"{CHECK_IMAGES:,} MNIST test images"
        return (f"the {self.source} (at most "
                f"{per_class_cap(self.contract.num_classes):,} per class)")

    def load(self) -> CheckSet:
        if self.folder is None:
            from digitkit.data import load_mnist

            mnist = load_mnist(self.data)
            return CheckSet(mnist.x_test[:CHECK_IMAGES].astype("float32"),
                            mnist.y_test[:CHECK_IMAGES], self.source, mnist.source,
                            self.contract.num_classes)
        from digitkit.model.detect import load_calibration

        k = self.contract.num_classes
        found = load_calibration(self.contract, self.folder, per_class_cap(k))
        return CheckSet(found.pixels.astype("float32", copy=False), found.labels,
                        self.source, f"calibration folder {self.folder}", k,
                        tuple(found.failures))


@dataclass(frozen=True)
class CheckSet:
    """The check images as tensors: `x` raw pixels of the contract, `y` class indices."""

    x: object
    y: object
    source: str  # CheckImages.source
    data_source: str  # where they were read from, as the record says it
    classes: int
    failures: tuple = ()  # (path, reason) of the folder's files that did not decode

    @property
    def name(self) -> str:
        return f"{len(self.y):,} {self.source}"


def per_class_cap(num_classes: int) -> int:
    """Files read per class of a general model's check folder: `CHECK_IMAGES` in all, spread
    evenly over its classes, at least one each (the gate's resolution, 99.9% of 2,000 images,
    is then the same whatever the number of classes)."""
    return max(1, math.ceil(CHECK_IMAGES / num_classes))


def check_images(model: str | os.PathLike, contract, request: AutoRequest) -> CheckImages:
    """The check images for `model` under `contract` (module docstring, step 2). UsageError
    (one line) for --calibration on a digit model, or a general model with no folder."""
    if contract.is_digit:
        if request.calibration is not None:
            raise UsageError("--calibration is for general image classifiers; --runtime auto "
                             f"checks a digit model on {CHECK_IMAGES:,} MNIST test images "
                             "(see --data)")
        return CheckImages(contract, data=request.data,
                           identity={"mnist_test": CHECK_IMAGES})
    folder = request.calibration
    if folder is None:
        folder, why = _recorded_folder(model)
        if folder is None:
            raise UsageError(f"{model}: --runtime auto holds every copy to the fp32 reference "
                             f"on labelled images: give --calibration DIR (one subfolder per "
                             f"class, named like the model's classes){why}")
    folder = os.fspath(folder)
    return CheckImages(contract, folder, identity=_folder_identity(folder, contract))


def _recorded_folder(model) -> tuple[str | None, str]:
    """(the calibration folder export.json records for an export directory, when it is still
    a readable folder; else None and why not, for the refusal)."""
    from digitkit.model.files import is_export_dir, read_export_dir

    if not is_export_dir(Path(model)):
        return None, ""
    recorded = read_export_dir(Path(model)).manifest.get("calibration")
    folder = recorded.get("folder") if isinstance(recorded, dict) else None
    if not isinstance(folder, str) or not folder:
        return None, " (export.json records no calibration folder)"
    # export records it absolute (older exports: as given, read from where we run).
    if not os.path.isdir(folder) or not os.access(folder, os.R_OK | os.X_OK):
        return None, (f" (the calibration folder export.json records, {folder}, is no longer "
                      "a readable folder)")
    return folder, ""


def _folder_identity(folder: str, contract) -> dict:
    """What a calibration on `folder` depends on, cheaply (no file decoded): its absolute
    path, the per-class cap, and a hash of every image file's name, class, size and mtime."""
    from digitkit.images.labelled import list_labelled

    _, files = list_labelled(folder, contract.class_names)
    digest = hashlib.sha256()
    for path, k in files:
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError as err:  # gone since it was listed: the decode will say so
            stamp = f"unreadable:{err.errno}"
        digest.update(f"{os.path.relpath(path, folder)}\0{k}\0{stamp}\n".encode(
            "utf-8", "surrogateescape"))
    return {"folder": os.path.abspath(folder), "files": len(files),
            "per_class": per_class_cap(contract.num_classes), "sha256": digest.hexdigest()}


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
    runnable, excluded, reference, hashes, keyed, paths = [], {}, None, {}, {}, {}
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
        if row.precision in allowed or cand is reference:
            paths[row.name] = cand.path
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
    return Candidates(runnable, reference, excluded, loose, keyed, paths)


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


def run_options(found: Candidates, request: AutoRequest) -> dict:
    """{row name: the options its predictor runs with in this request's regime}, for every
    keyed row and the reference, asked of the predictors themselves (nothing loaded, and a
    row not installed answers as well): a change in how digitkit sets up a runtime (as
    OpenVINO's pinning, turned off in this wave) is a new key and a new calibration, never
    an old speed read back."""
    from digitkit.predictors.runtimes import open_runtime

    threads, spinning = request.regime()
    return {name: open_runtime(name, path, threads, spinning, request.trust_model,
                               request.device).options()
            for name, path in found.paths.items()}


def cache_key(found: Candidates, request: AutoRequest, check: CheckImages) -> dict:
    ref = found.reference
    return {"candidates": found.copies,
            "reference": None if ref is None else {ref.row.name: ref.sha256},
            "precisions": list(request.allowed), "batch": request.batch,
            "threads": request.regime()[0], "device": request.device,
            "options": run_options(found, request),
            "check_images": check.identity, "gate": GATE, "machine": machine()}


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


def calibrate(found: Candidates, images: CheckSet, request: AutoRequest) -> list[dict]:
    """Every runnable candidate's gate figures and speed on `images` (module docstring,
    steps 2-3)."""
    import numpy as np

    from digitkit.predictors.compare import agreement
    from digitkit.predictors.runtimes import open_runtime
    from digitkit.predictors.timing import time_batch

    def outputs(predictor):
        return np.concatenate([predictor.predict(x[i:i + batch])
                               for i in range(0, len(x), batch)])

    def accuracy(out) -> float:
        return float(np.mean(out.argmax(axis=1) == y))

    x, y, batch = images.x, images.y, request.batch
    threads, spinning = request.regime()
    results, loaded = [], {}
    reference_out = ref_acc = None
    order = list(found.runnable)
    if found.reference is not None and found.reference not in order:
        order.insert(0, found.reference)  # the reference, even where fp32 is not allowed
    for cand in order:
        try:
            predictor = open_runtime(cand.row.name, cand.path, threads, spinning,
                                     request.trust_model, request.device).load()
            out = outputs(predictor)
            if out.shape != (len(x), images.classes):
                raise ModelError(f"outputs of shape {out.shape}, not ({len(x)}, "
                                 f"{images.classes})")
        except Exception as err:  # noqa: BLE001 - a runtime's own error on these images
            why = err.message if isinstance(err, DigitkitError) else one_line(err)
            if cand is found.reference:
                raise ModelError(f"{cand.path}: --runtime auto holds every copy to "
                                 f"{cand.row.name} on {images.name}, which it cannot run "
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
            # Only the throughput is wanted, and the gate's pass above has just run every
            # candidate at this batch size (when the check images hold a full batch): no
            # untimed calls then, and a round is one call where one call outlasts it, as a
            # large model's does (bench's minimum of calls is for its percentiles).
            t = time_batch(predictor.predict, xs, batch, warmup=0, duration=ROUND_SECONDS,
                           iterations=None, min_calls=1, first_call=r == 0 and len(xs) < batch)
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


def choose(model: str | os.PathLike, request: AutoRequest, convention=None,
           say: Callable[[str], None] = lambda line: None) -> Choice:
    """The row and copy that serve `model` under `--runtime auto` as `request` asks (module
    docstring); `convention`: the --input-* flags (`ConventionFlags`), which auto refuses."""
    from digitkit.predictors.runnable import model_contract

    if convention is not None and convention.given:
        raise UsageError(f"{', '.join(convention.given)}: the input flags are for a model made "
                         "elsewhere, which runs through digitkit's adapter on the runtime you "
                         "name; --runtime auto compares digitkit's own copies")
    found = candidates(model, request.precision, request.device, request.trust_model)
    contract = model_contract(model)
    if contract.is_digit and request.calibration is not None:
        check_images(model, contract, request)  # refused, even with nothing to measure
    if found.runnable == [found.reference]:  # nothing to compare it with: nothing to measure
        only = _only(found)
        say(f"digitkit: {only.line}")
        return only
    check = check_images(model, contract, request)
    threads = request.regime()[0]
    key = cache_key(found, request, check)
    path = cache_path(key)
    record = read_cached(path, key, found)
    if record is None:
        record = _calibrate_and_cache(found, request, check, key, say)
    chosen, passed_over = pick(record["results"], found, request.allowed)
    if chosen is None:
        raise ModelError(f"{model}: --runtime auto: no candidate passes the gate and can run "
                         "here (" + "; ".join(
                             f"{r['runtime']}: {r['refused'] or passed_over.get(r['runtime'])}"
                             for r in record["results"]) + ")")
    line = _evidence(record, chosen, found, passed_over, path, threads)
    say(f"digitkit: {line}")
    evidence = {"chosen": chosen["runtime"], "precision": chosen["precision"],
                "batch": request.batch, "threads": threads, "device": request.device,
                "reference": record["reference"], "gate": GATE,
                "check_images": record["check_images"],
                "check_images_source": record["check_source"],
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


def _calibrate_and_cache(found: Candidates, request: AutoRequest, check: CheckImages,
                         key: dict, say) -> dict:
    from digitkit.artifacts import write_json_atomic

    names = ", ".join(c.row.name for c in found.runnable)
    say(f"digitkit: --runtime auto: calibrating {names} on {check.planned()} at batch "
        f"{request.batch} (each classifies them once, then {ROUNDS} timed rounds of at least "
        "one batch: seconds for a small model, minutes for a large one on few cores; cached "
        "for the next run)")
    start = time.monotonic()
    images = check.load()
    if images.failures:
        (first, why), n = images.failures[0], len(images.failures)
        say(f"digitkit: --runtime auto: {n:,} file{'s' if n > 1 else ''} of {check.folder} "
            f"left out, not decodable (first: {first}: {why}); checking on {images.name}")
    results = calibrate(found, images, request)
    ref = found.reference
    path = cache_path(key)
    record = {"version": RECORD_VERSION, "key": key,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "seconds": round(time.monotonic() - start, 2),
              "reference": None if ref is None else ref.row.name,
              "check_images": int(len(images.y)), "check_source": images.source,
              "data_source": images.data_source, "results": results}
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
        f"{MAX_ACCURACY_DROP_POINTS} points, {record['check_images']:,} "
        f"{record['check_source']})")
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


__all__ = ["ANY_PRECISION", "AUTO", "CHECK_IMAGES", "GATE", "AutoRequest", "Candidate",
           "Candidates", "CheckImages", "CheckSet", "Choice", "calibrate", "candidates",
           "check_images", "choose", "per_class_cap", "pick"]
