"""Which input convention a model made elsewhere was trained on, found from evidence.

With nothing declared, every convention compatible with the model's input shape
(digitkit.model.conventions.candidates) is scored on labelled images, by accuracy AND by the
model's own loss (mean cross-entropy on the true labels): real MNIST test images for a digit
model, the user's labelled folder (--calibration DIR, `load_calibration`) for a general image
classifier. The convention with the lowest loss among the credible ones wins, unless another
is too close to call.

Credible: for digits, at least MIN_ACCURACY (80%); for a general classifier of K classes,
relative to chance (1/K): at least halfway from chance to perfect AND three binomial standard
errors above chance on the images scored (`credible_floor`), so that neither many classes nor
a small folder make a guess look like evidence.

Without labelled images, a general model's convention comes from what it states about itself
(SourceModel.stated: its embedded record, or its own Rescaling/Normalization layers), or the
flags; otherwise it is refused in one line naming --calibration and the flags. Never a guess.

Why the loss: a ReLU convnet trained on x/255 and fed 0..255 keeps almost all of its accuracy
(95.0% vs 95.2% in the issue) while its probabilities saturate; its cross-entropy is several
times larger, so the loss separates what accuracy cannot. Why accuracy too: it is what a person
can judge ("96.0%"), and it is the credibility floor.

Declared conventions (ConventionFlags with --input-scale) skip the scoring of candidates;
digitkit.model.resolve.resolve_convention is the one entry for both (and for the fit of
digitkit.model.fitting, which builds on this module). Numpy only (the base install runs it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from digitkit.errors import ModelError
from digitkit.model.conventions import (
    LOGITS,
    NO_FLAGS,
    PROBABILITIES,
    ConventionFlags,
    InputConvention,
    candidates,
    declare_hint,
)
from digitkit.model.foreign import SourceModel

#: MNIST test images scored per candidate. 2,000 put the standard error of a ~95% accuracy
#: at 0.5 points (and paired differences between candidates, on the same images, well below
#: that), enough to separate conventions that differ by the CLOSE_ACCURACY point; a candidate
#: costs one pass over them (12 passes in all), paid whenever export, infer or bench detect
#: a model's convention. The full 10,000 would cost 5x for the same ranking.
DEFAULT_DETECTION_IMAGES = 2000
#: The credibility floor. A linear classifier reaches ~92% on MNIST and any network people
#: save reaches more; a model below 80% under every convention is either not an MNIST digit
#: classifier or was trained on pixels prepared some way digitkit does not know, and
#: exporting it under a guess would be silently wrong.
MIN_ACCURACY = 0.80
#: Too close to call: another credible candidate is within CLOSE_ACCURACY of the best's
#: accuracy AND its loss within CLOSE_LOSS of the best's (relative). Measured on the seven
#: test fixtures (tests/_foreign_models.py, 86-95% accurate): the training convention's loss
#: is at least 1.42x every other's (1.42 NCHW /255 vs L2 axis=-1; 1.47 notebook axis=-1 vs
#: axis=1), so 15% leaves room for models trained longer or shorter; a model that barely
#: depends on the convention (digitkit's seed-mlp normalises inside: raw 0.368 vs L2 axis=-1
#: 0.394, 89.0% vs 88.3%) lands inside it and is refused rather than guessed.
CLOSE_ACCURACY = 0.01
CLOSE_LOSS = 0.15
#: Candidates whose probabilities differ by less than this (max |diff|) are one convention
#: for this model (e.g. raw, /255 and L2 for a model that normalises inside); the first in
#: candidate order, the simplest, is chosen and the others are named beside it.
EQUIVALENT_ATOL = 1e-4
#: Probabilities are clipped here before the log: a saturated wrong answer costs
#: -log(1e-7) = 16 nats instead of infinity (Keras's epsilon for the same loss).
LOSS_EPSILON = 1e-7
#: Outputs are probabilities when no value is below -SIMPLEX_TOL and every row sums to 1
#: within SIMPLEX_TOL (float32 softmax rows sum to 1 within ~1e-6).
SIMPLEX_TOL = 1e-3
#: A general classifier is credible at least this share of the way from chance (1/K) to
#: perfect: 60% for 5 classes, 55% for 10, ~50% for 1,000. A model under a wrong convention
#: keeps some of its accuracy (a colour swap or a shifted mean only blurs its features), so
#: the floor sits well above chance; a right convention on the user's own folder clears it
#: unless the model is no good on that data, which is worth refusing too.
CREDIBLE_SHARE = 0.5
#: ... and this many binomial standard errors above chance on the images scored, so that a
#: small folder cannot pass by luck (20 images of 2 classes need 17 right).
CREDIBLE_SIGMAS = 3.0
#: What digit detection scores on, for messages.
MNIST_DATA = "MNIST test images"
CALIBRATION_DATA = "calibration images"


class ConventionError(ModelError):
    """No input convention can be chosen for a model; the message names the flags."""


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def is_simplex(outputs: np.ndarray) -> bool:
    """Whether every row is a probability distribution (non-negative, summing to 1)."""
    o = np.asarray(outputs, dtype=np.float64)
    return bool(np.all(np.isfinite(o)) and o.min(initial=0.0) >= -SIMPLEX_TOL
                and np.all(np.abs(o.sum(axis=1) - 1.0) <= SIMPLEX_TOL))


def output_kind(*outputs: np.ndarray) -> str:
    """PROBABILITIES when every output array is a probability simplex, else LOGITS."""
    return PROBABILITIES if all(is_simplex(o) for o in outputs) else LOGITS


def predict_under(source: SourceModel, convention: InputConvention, pixels) -> np.ndarray:
    """The source model run under `convention` on the contract's raw pixels ((N, 28, 28) for
    digits): probabilities (N, K) float32. This is the reference every adapted copy is
    validated against."""
    out = source(convention.apply(pixels))
    return softmax(out) if convention.outputs == LOGITS else out.astype(np.float32)


def detection_sample(images: np.ndarray, labels: np.ndarray,
                     n: int = DEFAULT_DETECTION_IMAGES) -> tuple[np.ndarray, np.ndarray]:
    """`n` images evenly spaced over the set: MNIST's test set has its cleaner writers first,
    so the first n would flatter every candidate alike and hide differences."""
    total = len(images)
    if n >= total:
        return images, labels
    idx = (np.arange(n) * total) // n
    return images[idx], labels[idx]


def credible_floor(k: int, n: int) -> float:
    """The accuracy a general classifier of `k` classes must reach on `n` labelled images to
    be credible under a convention (CREDIBLE_SHARE, CREDIBLE_SIGMAS)."""
    chance = 1.0 / k
    return max(chance + CREDIBLE_SHARE * (1 - chance),
               chance + CREDIBLE_SIGMAS * float(np.sqrt(chance * (1 - chance) / max(n, 1))))


@dataclass(frozen=True)
class Score:
    convention: InputConvention
    accuracy: float
    loss: float  # mean cross-entropy on the true labels, nats
    floor: float = MIN_ACCURACY  # credible from here (digits: MIN_ACCURACY)

    @property
    def credible(self) -> bool:
        return self.accuracy >= self.floor

    def line(self) -> str:
        return f"{self.convention.describe():<38} {self.accuracy:8.1%} {self.loss:8.3f}"


def score(probabilities: np.ndarray, labels: np.ndarray, convention) -> Score:
    p = np.where(np.isfinite(probabilities), probabilities, 0.0)
    labels = np.asarray(labels).astype(np.int64)
    accuracy = float(np.mean(p.argmax(axis=1) == labels))
    picked = np.clip(p[np.arange(len(labels)), labels], LOSS_EPSILON, 1.0)
    contract = convention.contract
    floor = (MIN_ACCURACY if contract.is_digit
             else credible_floor(contract.num_classes, len(labels)))
    return Score(convention, accuracy, float(-np.mean(np.log(picked))), floor)


#: How a convention was chosen: scored on labelled images; declared by flags; the model
#: presents its contract by name; the model states it (embedded record, own layers).
DETECTED, DECLARED, CONTRACT, STATED = "detected", "declared", "contract", "stated"


@dataclass(frozen=True)
class Detection:
    """The chosen convention, how (DETECTED from scores; DECLARED by flags; CONTRACT: the model
    presents digitkit's contract by name, SourceModel.honours_contract), and the evidence:
    `scores` ranked best first (declared or contract: its own score when labels were at hand,
    else none)."""

    convention: InputConvention
    scores: tuple[Score, ...] = ()
    how: str = DETECTED
    images: int = 0
    equivalent: tuple[InputConvention, ...] = field(default=())  # same outputs as the chosen
    data: str = MNIST_DATA  # what the scores were measured on, for people
    stated_by: str | None = None  # STATED: where the model states it

    @property
    def declared(self) -> bool:
        return self.how == DECLARED

    @property
    def best(self) -> Score | None:
        return self.scores[0] if self.scores else None

    @property
    def runner_up(self) -> Score | None:
        rest = [s for s in self.scores[1:] if s.convention not in self.equivalent]
        return rest[0] if rest else None

    def summary(self) -> str:
        """One line, e.g. "detected: keras.utils.normalize(axis=1), 96.0%; next best: /255,
        91.3%" (accuracies on `images` MNIST test images)."""
        what = self.convention.describe()
        if self.convention.outputs == LOGITS:
            what += " (logits: softmax added)"
        if self.how != DETECTED:
            acc = f", {self.best.accuracy:.1%}" if self.best else ""
            label = ("declared" if self.declared else f"stated by {self.stated_by}"
                     if self.how == STATED else "digitkit contract")
            return f"{label}: {what}{acc}"
        line = f"detected: {what}, {self.best.accuracy:.1%}"
        if self.equivalent:
            line += f" (same outputs as {', '.join(c.describe() for c in self.equivalent)})"
        nxt = self.runner_up
        if nxt is not None:
            line += f"; next best: {nxt.convention.describe()}, {nxt.accuracy:.1%}"
        return line

    def evidence(self) -> str:
        """" on 2,000 MNIST test images" (empty when nothing was scored), to follow summary."""
        return f" on {self.images:,} {self.data}" if self.scores else ""

    def table(self) -> list[str]:
        head = f"{'input convention':<38} {'accuracy':>8} {'loss':>8}"
        return [head] + [s.line() for s in self.scores]

    def to_dict(self) -> dict:
        """For export.json: the convention, how it was chosen, and the evidence (a general
        model's record also says what it was measured on)."""
        d = {
            "convention": self.convention.to_dict(),
            "how": self.how,
            "summary": self.summary(),
            "images": self.images,
            "candidates": [{"convention": s.convention.describe(), "accuracy": s.accuracy,
                            "loss": s.loss} for s in self.scores],
        }
        if not self.convention.contract.is_digit:
            d["data"] = self.data
        return d


def refusal(source: SourceModel, why: str) -> ConventionError:
    return ConventionError(f"{source.name}: {why}; {declare_hint(source.contract)}")


def outputs_read(source: SourceModel, flags: ConventionFlags, *outputs: np.ndarray) -> str:
    """What the model outputs: --outputs when given (probabilities only if they are), else
    read off its outputs."""
    found = output_kind(*outputs)
    if flags.outputs == PROBABILITIES and found == LOGITS:
        raise ConventionError(f"{source.name}: --outputs {PROBABILITIES}, but its outputs are "
                              "not probabilities (negative values or rows not summing to 1); "
                              f"use --outputs {LOGITS}")
    return flags.outputs or found


def detect_convention(source: SourceModel, images: np.ndarray, labels: np.ndarray,
                      flags: ConventionFlags = NO_FLAGS,
                      n: int = DEFAULT_DETECTION_IMAGES, data: str | None = None) -> Detection:
    """Score every candidate the flags allow on `n` of the labelled `images` (raw pixels of
    the source's contract: MNIST test images for digits, a calibration folder's for a
    general contract; `data` names them for people); ConventionError when none is credible
    or the best two are too close."""
    data = data or data_name(source)
    flags.check_for(source.contract)
    x, y = detection_sample(images, labels, n)
    layout = flags.layout_for(source.input_shape, source.contract)
    pool = [c for c in candidates(source.input_shape, layout=layout, contract=source.contract)
            if flags.allows(c)]
    raw = [source(c.apply(x)) for c in pool]
    kind = outputs_read(source, flags, *raw)
    pool = [c.with_outputs(kind) for c in pool]
    probs = [softmax(o) if kind == LOGITS else o for o in raw]
    scored = [score(p, y, c) for p, c in zip(probs, pool, strict=True)]
    order = sorted(range(len(pool)), key=lambda i: (not scored[i].credible, scored[i].loss, i))
    scores = tuple(scored[i] for i in order)
    best_i = order[0]
    if not scores[0].credible:
        best = scores[0]
        if source.contract.is_digit:
            raise refusal(source, "no input convention makes it a credible digit classifier "
                          f"(best: {best.convention.describe()}, {best.accuracy:.1%} on "
                          f"{len(x)} {data}, below {MIN_ACCURACY:.0%})")
        k = source.contract.num_classes
        raise refusal(source, "no input convention makes it a credible classifier of its "
                      f"{k} classes (best: {best.convention.describe()}, {best.accuracy:.1%} "
                      f"on {len(x)} {data}, below {best.floor:.0%}: chance is {1 / k:.0%})")
    same = [i for i in order if np.max(np.abs(probs[i] - probs[best_i])) < EQUIVALENT_ATOL]
    chosen_i = min(same)  # the simplest of the equivalent conventions
    equivalent = tuple(pool[i] for i in sorted(same) if i != chosen_i)
    chosen = pool[chosen_i]
    if chosen_i != best_i:  # list the chosen one first; its score is the best's within atol
        scores = (scored[chosen_i], *(s for s in scores if s.convention != chosen))
    detection = Detection(chosen, scores, DETECTED, len(x), equivalent, data)
    best = scores[0]
    for other in scores[1:]:  # ranked by loss, but a close accuracy can sit further down
        if (other.convention not in equivalent and other.credible
                and other.accuracy >= best.accuracy - CLOSE_ACCURACY
                and other.loss <= best.loss * (1 + CLOSE_LOSS)):
            raise refusal(source, "input convention too close to call: "
                          f"{best.convention.describe()} ({best.accuracy:.1%}, loss "
                          f"{best.loss:.3f}) vs {other.convention.describe()} "
                          f"({other.accuracy:.1%}, loss {other.loss:.3f}) on {len(x)} {data}")
    return detection


def data_name(source: SourceModel) -> str:
    return MNIST_DATA if source.contract.is_digit else CALIBRATION_DATA


def load_calibration(contract, root, per_class: int | None = None):
    """A labelled folder (--calibration DIR) as the contract's raw pixels, decoded by the
    pipeline infer uses (digitkit.images.labelled.load_labelled with the contract's pixel
    policy), its folders matched to the contract's class names. DataError (one line, naming
    the folder) when nothing in it decodes."""
    from functools import partial

    from digitkit.images.labelled import load_labelled
    from digitkit.images.pixels import load_pixels_batch

    if contract.is_digit:
        from digitkit.errors import UsageError

        raise UsageError("--calibration is for general image models; a digit model's "
                         "convention is detected on MNIST test images (--data)")
    return load_labelled(root, partial(load_pixels_batch, policy=contract.pixel_policy),
                         contract.class_names, per_class)


def calibration_data(labelled) -> str:
    """"calibration images in DIR": what detection on a LabelledSet scored, for people."""
    return f"{CALIBRATION_DATA} in {labelled.root}"
