"""Parity checks of exported copies against the Keras model they came from.

Every exported artifact is run on the same inputs as the source model: real MNIST test
images plus edge inputs that catch what real images do not (an all-black image, an
all-white image, a batch of one, an odd batch size that breaks a batch dimension frozen to a
power of two). For each artifact we compare output names, shapes, the maximum absolute
difference of the probabilities against a stated tolerance, and top-1 agreement.

Copies run through the predictor layer, the same sessions `infer` and `bench` open, and the
numbers come from digitkit.predictors.compare.agreement, the one rule for "how well does a
copy agree with a reference". Nothing here imports TensorFlow at module level: checking an
ONNX file must stay cheap.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from digitkit.errors import ModelError, one_line
from digitkit.model.contract import DIGIT_CONTRACT, ModelContract
from digitkit.predictors import ort as ort_predictors
from digitkit.predictors import tf as tf_predictors
from digitkit.predictors.compare import agreement

#: Odd on purpose: a batch dimension accidentally frozen (or padded to a power of two) fails it.
ODD_BATCH = 7


@dataclass
class Case:
    """One named input batch and the reference (Keras) output on it."""

    name: str
    pixels: np.ndarray  # float32, the contract's input: (N, 28, 28) for digits
    reference: np.ndarray | None = None  # float32 (N, classes)


@dataclass
class CaseResult:
    case: str
    batch: int
    output_name: str | None
    shape: list | None
    max_abs_diff: float | None
    top1_agree: int
    ok: bool
    problem: str | None = None


@dataclass
class ArtifactValidation:
    """Parity of one artifact against the reference over every case."""

    artifact: str  # "savedmodel", "onnx", ...
    runtime: str  # e.g. "onnxruntime 1.32.0"
    atol: float | None  # None: differences are reported, not judged (int8 copies)
    cases: list[CaseResult] = field(default_factory=list)
    error: str | None = None  # the artifact could not even be loaded or run
    failure: str | None = None  # a check beyond parity failed (int8: accuracy drop)
    notes: str | None = None  # extra figures for the table (int8: accuracy and size)
    extra: dict = field(default_factory=dict)  # more export.json keys (int8: "accuracy")
    rtol: float = 0.0  # with atol: |copy - reference| <= atol + rtol * |reference|

    @property
    def ok(self) -> bool:
        return (self.error is None and self.failure is None and bool(self.cases)
                and all(c.ok for c in self.cases))

    @property
    def max_abs_diff(self) -> float | None:
        diffs = [c.max_abs_diff for c in self.cases if c.max_abs_diff is not None]
        return max(diffs) if diffs else None

    @property
    def top1(self) -> tuple[int, int]:
        return sum(c.top1_agree for c in self.cases), sum(c.batch for c in self.cases)

    def to_dict(self) -> dict:
        agree, total = self.top1
        return {
            "status": "passed" if self.ok else "failed",
            "runtime": self.runtime,
            "atol": self.atol,
            "rtol": self.rtol if self.atol is not None else None,
            "max_abs_diff": self.max_abs_diff,
            "top1_agreement": [agree, total],
            "error": self.error,
            "failure": self.failure,
            "notes": self.notes,
            "cases": [asdict(c) for c in self.cases],
        }


def make_cases(x_test: np.ndarray, n_images: int,
               contract: ModelContract = DIGIT_CONTRACT) -> list[Case]:
    """Real test images plus the edge inputs every export must survive (of the contract's
    input shape)."""
    if len(x_test) < 1:
        raise ModelError("no test images to validate with")
    n = min(n_images, len(x_test))
    real = np.asarray(x_test[:n], dtype=np.float32)
    return [
        Case(f"mnist_test[:{n}]", real),
        Case("all_zeros", np.zeros((2, *contract.input_shape), np.float32)),
        Case("all_255", np.full((2, *contract.input_shape), 255.0, np.float32)),
        Case("batch_of_1", real[:1].copy()),
        Case(f"odd_batch_{ODD_BATCH}", np.asarray(x_test[-ODD_BATCH:], np.float32)),
    ]


#: Seeded random pixels in every general export's parity cases: uniform 0..255 on every
#: channel, they reach the corners of the input range real photos rarely do. 32 keep a
#: 224x224x3 case at 19 MB.
RANDOM_IMAGES = 32
RANDOM_SEED = 0


def general_cases(real: np.ndarray | None, n_images: int, contract: ModelContract,
                  seed: int = RANDOM_SEED) -> list[Case]:
    """A general image classifier's parity cases: up to `n_images` of its calibration pixels
    (`real`, None without a folder), seeded random pixels, and the same edge inputs as digits
    (all zeros, all 255, a batch of one, an odd batch)."""
    shape = contract.pixels_shape
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (RANDOM_IMAGES, *shape)).astype(np.float32)
    cases = []
    pool = noise
    if real is not None and len(real):
        n = min(n_images, len(real))
        pool = np.asarray(real[:n], dtype=np.float32)
        cases.append(Case(f"calibration[:{n}]", pool))
    odd = pool[-ODD_BATCH:] if len(pool) >= ODD_BATCH else noise[-ODD_BATCH:]
    return cases + [
        Case(f"random_pixels[seed={seed}]", noise),
        Case("all_zeros", np.zeros((2, *shape), np.float32)),
        Case("all_255", np.full((2, *shape), 255.0, np.float32)),
        Case("batch_of_1", pool[:1].copy()),
        Case(f"odd_batch_{ODD_BATCH}", odd.copy()),
    ]


def fill_reference(model, cases: list[Case]) -> None:
    """The Keras model's own outputs are the reference every copy is held to."""
    for case in cases:
        case.reference = np.asarray(model(case.pixels, training=False), dtype=np.float32)


def compare(name: str, runtime: str, run, cases: list[Case], atol: float | None,
            rtol: float = 0.0, contract: ModelContract = DIGIT_CONTRACT) -> ArtifactValidation:
    """Run `run(pixels) -> {output_name: array}` on every case and compare with the reference:
    the contract's output, every probability within atol + rtol * |reference|
    (numpy.allclose's rule; atol None: differences are reported, not judged)."""
    result = ArtifactValidation(name, runtime, atol, rtol=rtol)
    for case in cases:
        try:
            outputs = _run_in_calls(run, case.pixels)
        except Exception as e:  # noqa: BLE001 - any runtime failure is a validation failure
            result.cases.append(CaseResult(case.name, len(case.pixels), None, None, None, 0,
                                           False, f"run failed: {one_line(e)}"))
            continue
        result.cases.append(_compare_case(case, outputs, atol, rtol, contract))
    return result


def _run_in_calls(run, pixels) -> dict:
    """`run` over `pixels` in calls of `predictors.base.call_batch` images, the outputs joined:
    one case of hundreds of 224x224x3 images at once would hold all their activations."""
    from digitkit.model.calls import in_calls

    parts = [run(part) for part in in_calls(pixels)]
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def _compare_case(case: Case, outputs: dict, atol: float | None, rtol: float,
                  contract: ModelContract) -> CaseResult:
    n = len(case.pixels)
    names = list(outputs)
    name = contract.output_name
    if name not in outputs:
        return CaseResult(case.name, n, ",".join(names), None, None, 0, False,
                          f'no output named "{name}" (got {names})')
    out = np.asarray(outputs[name])
    shape = list(out.shape)
    if out.shape != (n, contract.num_classes):
        return CaseResult(case.name, n, name, shape, None, 0, False,
                          f"shape {tuple(out.shape)}, expected {(n, contract.num_classes)}")
    a = agreement(out, case.reference)
    problem = None
    if not a.finite:
        problem = "non-finite outputs"
    elif atol is not None and not _within(out, case.reference, atol, rtol):
        problem = f"max |diff| {a.max_abs_diff:.2e} exceeds atol {atol:.0e}" + (
            f" + rtol {rtol:.0e} x |reference|" if rtol else "")
    return CaseResult(case.name, n, name, shape, a.max_abs_diff, a.top1_agree,
                      problem is None, problem)


def _within(out: np.ndarray, reference: np.ndarray, atol: float, rtol: float) -> bool:
    ref = np.asarray(reference, dtype=np.float64)
    return bool(np.all(np.abs(np.asarray(out, np.float64) - ref) <= atol + rtol * np.abs(ref)))


def validate_onnx(path: str | os.PathLike, cases: list[Case], atol: float | None,
                  name: str = "onnx", rtol: float = 0.0,
                  contract: ModelContract = DIGIT_CONTRACT) -> ArtifactValidation:
    """Check an ONNX file with ONNX Runtime against the reference outputs in `cases`."""
    runtime = ort_predictors.runtime_version()
    want = contract.input_name
    try:
        predictor = ort_predictors.OnnxPredictor(path).load()
        if predictor.input_names != [want]:
            raise ModelError(f'inputs are {predictor.input_names}, expected ["{want}"]')
    except Exception as e:  # noqa: BLE001
        return ArtifactValidation(name, runtime, atol, error=one_line(e), rtol=rtol)
    return compare(name, runtime, predictor.outputs, cases, atol, rtol, contract)


def validate_savedmodel(path: str | os.PathLike, cases: list[Case],
                        atol: float | None, rtol: float = 0.0, trust_model: bool = False,
                        contract: ModelContract = DIGIT_CONTRACT) -> ArtifactValidation:
    """Load a SavedModel from disk (not the in-memory copy) and check its serving signature.
    `trust_model`: the copy of a trusted source carries what the source's graph does."""
    runtime = tf_predictors.runtime_version()
    want = contract.input_name
    try:
        predictor = tf_predictors.SavedModelPredictor(path, trust_model=trust_model)
        sig = predictor.signature
        if sig.input_name != want:
            raise ModelError(f'signature inputs are {[sig.input_name]}, expected '
                             f'["{want}"]')
        if tuple(sig.input_shape) != (None, *contract.input_shape):
            raise ModelError(f"signature input shape is {sig.input_shape}")
    except Exception as e:  # noqa: BLE001
        return ArtifactValidation("savedmodel", runtime, atol, error=one_line(e), rtol=rtol)
    return compare("savedmodel", runtime, predictor.outputs, cases, atol, rtol, contract)


def format_table(results: list[ArtifactValidation], reference: str | None = None,
                 contract: ModelContract = DIGIT_CONTRACT) -> str:
    """Optimum-like, one line per artifact, aligned; failing cases spelled out below.

    `reference` names the source of the reference outputs (a first "[ref]" row); the copies
    are named by their `contract`'s output.
    """
    if not results:
        return ""
    rows = []
    if reference:
        rows.append(("[ref]", reference, "reference outputs every copy below is compared to"))
    for r in results:
        tag = "[ok]" if r.ok else "[FAILED]"
        head = f"{r.artifact} ({r.runtime})"
        if r.error:
            rows.append((tag, head, f"could not load or run: {r.error}"))
            continue
        agree, total = r.top1
        shape = next((c.shape for c in r.cases if c.shape), None)
        diff = r.max_abs_diff
        if diff is None:
            diff_txt = "n/a"
        elif r.atol is None:
            diff_txt = f"{diff:.1e} (reported, not judged: held to test accuracy)"
        elif r.rtol:
            beyond = any(c.problem and "exceeds" in c.problem for c in r.cases)
            within = "beyond" if beyond else "within"
            diff_txt = f"{diff:.1e} {within} atol {r.atol:.0e} + rtol {r.rtol:.0e}"
        else:
            diff_txt = f"{diff:.1e} {'<=' if diff <= r.atol else '>'} atol {r.atol:.0e}"
        rows.append((tag, head,
                     f'output "{contract.output_name}" shape '
                     f'{tuple(shape) if shape else "?"}; '
                     f"max |diff| {diff_txt}; top-1 agreement {agree}/{total}; "
                     f"{len(r.cases)} input batches"))
        for c in r.cases:
            if not c.ok:
                rows.append(("", "", f"  - {c.case} (batch {c.batch}): {c.problem}"))
        if r.notes:
            rows.append(("", "", f"  {r.notes}"))
        if r.failure:
            rows.append(("", "", f"  - {r.failure}"))
    w0 = max(len(t) for t, _, _ in rows)
    w1 = max(len(h) for _, h, _ in rows)
    return "\n".join(f"{t:<{w0}} {h:<{w1}}  {m}".rstrip() for t, h, m in rows)


def human_size(n: int) -> str:
    """Sizes as the table and the artifact list print them (B, KiB, MiB)."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
