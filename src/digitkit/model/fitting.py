"""Fitting a convention's continuous constants from labelled data, not picking the nearest
preset.

Detection (digitkit.model.detect) chooses among presets. A model trained on constants no
preset has (an MNIST MLP on (x/255 - 0.2)/0.45; a CIFAR-style model on its own data's mean
and std) is then run under the nearest preset, and a share of its labels silently differ from
its own. When the detected convention is an affine map of the pixels, x -> (x/255 - mean)/std
(raw 0..255 is mean 0, std 1/255; /255 is mean 0, std 1; per channel for an RGB model),
`refine` fits (mean, std) on the labelled calibration images by minimising the model's own
cross-entropy on the true labels (Nelder-Mead, from every affine preset among the candidates
and the best point of a coarse grid), and rounds the constants to what a person would have
typed. The rules, each stated where its constant is:

- enough data: at least MIN_PER_CLASS calibration images of every class in each half;
  otherwise nothing is fitted and the summary says so, naming --input-mean/--input-std;
- beyond noise: the fit is CROSS-FITTED: each half is scored under the constants (and the
  temperature, below) fitted on the other half, and the fit replaces the preset only when
  that held-out loss is below the preset's (likewise at the other half's temperature) by
  MIN_GAIN of it and by Z_GAIN paired standard errors; otherwise the preset is kept, the
  fitted row shown beside it;
- stable: the two halves' constants agree (STABLE_MEAN, STABLE_LABELS); a fit that beats the
  preset but is not stable is refused (ConventionError naming --input-mean/--input-std):
  neither the preset nor the fit can be trusted then.
- where detection refuses (no preset credible, or two too close to call), `detect_and_fit`
  fits from the affine presets anyway (RESCUE_SHARE) and takes the fit when these rules
  accept it and it is credible itself; otherwise detection's refusal stands.

What labels can and cannot tell. A network's labels depend on x/255 - mean, but barely on
the std: dividing the input by a constant mostly scales the logits (a ReLU network without
biases exactly), which changes the model's confidence, not its answers. So the std that
minimises the cross-entropy is the one that best calibrates the model on unseen images: the
training std for a model as confident on unseen images as on its training set, a larger one
for an overconfident model (measured: an MLP trained 15 epochs on 6,000 images at
(x/255-0.2)/0.45 fits (x/255-0.2)/0.6, with the same labels; one trained the same way on
MNIST's preset fits (x/255-0.14)/0.46, a held-out loss 10% lower, the same labels on every
test image; a /255 model fits (x/255-0.0)/1.4, 0.5% of its labels changed, for the worse).
A fit that only changes the confidence is no evidence that the preset is wrong, so the gain
test compares fit and preset each at its own best temperature (softmax(tau * logits), tau
fitted on the other half): only what a temperature cannot explain counts, and a model
trained on a preset keeps it. The fitted std is still the plain cross-entropy's: the
constants that reproduce the model's confidence best.
On images a model was trained on and classifies perfectly, the cross-entropy falls without
end as the std shrinks (more confidence costs nothing there): the fitted std runs to the
smallest the search reaches, the gain test finds nothing a temperature does not explain, and
the preset stays. A fit needs images the model has not learned by heart.
The means are where the model's own loss is stationary only if its training finished: a
mean shift is a shift of its first biases, and a trained model's biases sit at its loss's
minimum only once the optimiser converged. Measured on RGB models of 8x8 and 16x16 colour
photo crops (8 classes, per-channel constants (0.50,0.42,0.33)/(0.27,0.22,0.26), 800-2,000
calibration crops): MLPs stopped after a few hundred Adam steps, and a logistic regression
stopped short by its iteration cap, fit means 0.01-0.026 below the truth and keep 97.4-98.6%
of their labels on held-out crops (these models' labels move with a colour cast of a few
grey levels); the converged logistic regression of tests/test_model_fitting_rgb.py fits them
within 0.01 (rounded to 2 decimals) and keeps 99.9%.

The source model is a black box (SourceModel: arrays in, arrays out), so the optimiser is
derivative-free, numpy only: the base install runs it. A fit costs a few hundred passes over
the calibration images; it is cached (CACHE_DIR) under a fingerprint of the model's outputs,
the calibration images and the preset, so infer's later starts reuse it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields, replace

import numpy as np

from digitkit.model.conventions import (
    BLACK_ON_WHITE,
    LOGITS,
    NO_FLAGS,
    PROBABILITIES,
    ConventionFlags,
    InputConvention,
    candidates,
)
from digitkit.model.detect import (
    DEFAULT_DETECTION_IMAGES,
    DETECTED,
    LOSS_EPSILON,
    MIN_ACCURACY,
    ConventionError,
    Detection,
    Score,
    detect_convention,
    detection_sample,
    output_kind,
    score,
    softmax,
)
from digitkit.model.foreign import SourceModel

#: The fit needs this many calibration images of every class in EACH half (twice this in
#: all): with fewer, a few odd images move a half's constants, and the halves' agreement no
#: longer tells a real optimum from noise. MNIST detection's 2,000 test images give ~100 per
#: class per half.
MIN_PER_CLASS = 10
#: The fit replaces the preset only when its held-out loss is below the preset's by at least
#: MIN_GAIN of the preset's (a smaller gain is not worth constants nobody wrote) ...
MIN_GAIN = 0.03
#: ... and by at least Z_GAIN standard errors of the paired per-image difference (a fit no
#: better than the preset passes by chance ~2% of the time). Measured on MNIST MLPs (2,000
#: images): z = 2.7 and 3.6 for two models at (x/255-0.2)/0.45 (gains 5% and 7%), z below 0.5
#: for models at /255 and at both standardized presets.
Z_GAIN = 2.0
#: The halves agree when their means differ by at most STABLE_MEAN (on the 0..1 scale: 13
#: grey levels) and their constants give different labels to at most STABLE_LABELS times as
#: many calibration images as the fit relabels against the preset (the halves' noise at most
#: half the fit's effect). The stds are judged by the labels they give, not by their ratio:
#: labels barely fix a std (see above), least of all one per channel, so two halves' stds can
#: be far apart with the same labels (the RGB model of tests/test_model_fitting_rgb.py:
#: 1,000-image halves' stds a factor 1.12-1.26 apart per channel, means 0.012, the same label
#: on all 2,000 images; the fit relabels 5% against ImageNet's preset), and a std that
#: changes no label is no evidence of noise that matters; one that does is. Measured on
#: 1,000-image halves of MNIST test images: an MLP at (x/255-0.2)/0.45, means 0.001 apart,
#: stds a factor 1.06, the same labels throughout; one at (x/255-0.3)/0.15 (82% accurate),
#: means 0.014 apart, 1.0% of labels different, the fit relabelling at least 3.8% (its gain
#: in accuracy); one at MNIST's preset, 1.05% different (its fit is not taken).
STABLE_MEAN = 0.05
STABLE_LABELS = 0.5
#: Rounding: the fewest decimals (the mean's plus the std's, each 1..4) whose loss on all
#: calibration images is within ROUND_LOSS of the unrounded fit's; those constants are
#: reported and used.
ROUND_LOSS = 0.005
DECIMALS = (1, 2, 3, 4)
#: Nelder-Mead over (the means, the logs of the stds): START_EVALS evaluations from each
#: preset, then up to MAX_EVALS from the best to a simplex smaller than X_TOL; the halves start
#: from the full fit (HALF_EVALS). Each budget is per channel (a gray model has 2 coordinates,
#: an RGB one 6). Initial steps: STEP of the std in a mean, STEP in a log std.
START_EVALS = 20
MAX_EVALS = 80
HALF_EVALS = 40
X_TOL = 2e-3
STEP = 0.25
#: The coarse grid a fit also starts from (its best point), on the 0..1 scale.
GRID_MEANS = tuple(round(0.1 * i, 1) for i in range(11))
GRID_STDS = (0.1, 0.2, 0.35, 0.6, 1.0)
#: Newton steps for the temperature (it converges in 3-5), and the largest inverse one.
TAU_STEPS = 20
TAU_MAX = 100.0
#: When detection refuses, a fit is still tried from the best affine preset if that preset
#: reaches this share of the credibility floor (MNIST: 40% against 80%). Measured: an MLP
#: trained on (x/255-0.3)/0.15 (83% under its own constants) reaches 78% under the nearest
#: preset and is refused by detection alone; the fit finds (x/255-0.3)/0.15.
RESCUE_SHARE = 0.5
#: Where fits are cached, under digitkit's cache directory (digitkit.data.cache_dir).
CACHE_DIR = "fitted"
#: Part of every cache key with the rules' constants: a change to how a fit is made
#: invalidates old fits.
FIT_VERSION = 2
#: Calibration images whose outputs (under the preset) fingerprint the model in the cache key.
FINGERPRINT_IMAGES = 32

FLAGS_HINT = ("declare the constants with --input-scale standardized --input-mean M "
              "--input-std S")


# ------------------------------------------------------------------------ the parameters


#: Constants are a pair (means, stds): one tuple per kind, one value per channel of the
#: contract's pixels (RGB order), on the 0..1 scale. The affine scales as such constants
#: (beside "standardized", which states its own): raw 0..255 is (x/255 - 0)/(1/255), /255 is
#: (x/255 - 0)/1, Keras' tf mode x/127.5 - 1 is (x/255 - 0.5)/0.5, Keras' caffe mode x - mean
#: on 0..255 is (x/255 - mean/255)/(1/255).
def _scale_constants(scale: str, channels: int):
    if scale == "raw":
        return (0.0,) * channels, (1 / 255,) * channels
    if scale == "unit":
        return (0.0,) * channels, (1.0,) * channels
    if scale == "tf":
        return (0.5,) * channels, (0.5,) * channels
    if scale == "caffe":
        from digitkit.model.conventions import CAFFE_MEAN  # with the general conventions

        return tuple(v / 255 for v in CAFFE_MEAN), (1 / 255,) * channels
    return None


def _channels(convention: InputConvention) -> int:
    return getattr(convention.contract, "channels", 1) or 1


def _as_tuple(value, channels: int) -> tuple[float, ...]:
    values = tuple(float(v) for v in value) if isinstance(value, (tuple, list)) \
        else (float(value),)
    return values * channels if len(values) == 1 else values


def affine(convention: InputConvention):
    """(means, stds) of an affine convention, one per channel on the 0..1 scale, or None when
    it is not one."""
    channels = _channels(convention)
    if convention.scale == "standardized":
        return (_as_tuple(convention.mean, channels), _as_tuple(convention.std, channels))
    return _scale_constants(convention.scale, channels)


def standardized(preset: InputConvention, means, stds) -> InputConvention:
    """`preset` with the constants (means, stds) instead of its own values (a digit
    contract's convention keeps one float each, as its record always had)."""
    means, stds = tuple(float(m) for m in means), tuple(float(s) for s in stds)
    if preset.contract.is_digit:
        return replace(preset, scale="standardized", mean=means[0], std=stds[0], l2_axis=None)
    return replace(preset, scale="standardized", mean=means, std=stds, l2_axis=None)


def halves_apart(a, b) -> tuple[float, float]:
    """How far apart two halves' constants (means, stds) are: (the largest |mean difference|
    on the 0..1 scale, the largest ratio of the stds, >= 1), over the channels."""
    mean_gap = max(abs(p - q) for p, q in zip(a[0], b[0], strict=True))
    std_ratio = max(max(p, q) / min(p, q) for p, q in zip(a[1], b[1], strict=True))
    return mean_gap, std_ratio


def constants_text(means, stds, decimals=(4, 4)) -> str:
    """"(x/255-0.20)/0.45", or per channel "(x/255-(0.49,0.48,0.45))/(0.25,0.24,0.26)"."""
    dm, ds = decimals
    if len(means) == 1:
        sign = "-" if means[0] >= 0 else "+"
        return f"(x/255{sign}{abs(means[0]) + 0:.{dm}f})/{stds[0]:.{ds}f}"
    m = ",".join(f"{v + 0:.{dm}f}" for v in means)
    s_ = ",".join(f"{v:.{ds}f}" for v in stds)
    return f"(x/255-({m}))/({s_})"


def _theta(constants) -> np.ndarray:
    """Constants as the optimiser's coordinates: the means, then the logs of the stds."""
    means, stds = constants
    return np.array([*means, *(math.log(v) for v in stds)], dtype=np.float64)


def _constants(theta) -> tuple[tuple[float, ...], tuple[float, ...]]:
    c = len(theta) // 2
    return (tuple(float(v) for v in theta[:c]), tuple(math.exp(float(v)) for v in theta[c:]))


def nelder_mead(f, x0, steps, max_evals: int = MAX_EVALS, x_tol: float = X_TOL):
    """Minimise f over R^d from x0 (the textbook Nelder-Mead: reflect, expand, contract,
    shrink); stops after max_evals evaluations or when the simplex is smaller than x_tol in
    every coordinate. Returns (x, f(x), evaluations)."""
    x0 = np.asarray(x0, dtype=np.float64)
    simplex = [x0] + [x0 + np.eye(len(x0))[i] * steps[i] for i in range(len(x0))]
    values = [f(x) for x in simplex]
    evals = len(values)
    while evals < max_evals:
        order = np.argsort(values)
        simplex = [simplex[i] for i in order]
        values = [values[i] for i in order]
        if np.max(np.abs(np.array(simplex[1:]) - simplex[0])) < x_tol:
            break
        centroid = np.mean(simplex[:-1], axis=0)
        worst = simplex[-1]
        xr = centroid + (centroid - worst)
        fr = f(xr)
        evals += 1
        if fr < values[0]:
            xe = centroid + 2 * (centroid - worst)
            fe = f(xe)
            evals += 1
            simplex[-1], values[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = xr, fr
        else:
            xc = (centroid + (xr if fr < values[-1] else worst)) / 2
            fc = f(xc)
            evals += 1
            if fc < min(fr, values[-1]):
                simplex[-1], values[-1] = xc, fc
            else:  # shrink towards the best
                simplex = [simplex[0]] + [(simplex[0] + s) / 2 for s in simplex[1:]]
                values = [values[0]] + [f(s) for s in simplex[1:]]
                evals += len(simplex) - 1
    best = int(np.argmin(values))
    return simplex[best], values[best], evals


# ------------------------------------------------------------------------ the losses


def scores_of(outputs: np.ndarray, logits: bool) -> np.ndarray:
    """The model's outputs as log-scores: its logits, or the log of its probabilities
    (clipped at LOSS_EPSILON, as the loss is)."""
    o = np.where(np.isfinite(outputs), outputs, 0.0).astype(np.float64)
    return o if logits else np.log(np.clip(o, LOSS_EPSILON, 1.0))


def cross_entropy(z: np.ndarray, y: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """Per-image cross-entropy of softmax(tau * z) on the labels y."""
    t = tau * z
    t = t - t.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(t).sum(axis=1))
    picked = t[np.arange(len(y)), y] - log_norm
    return -np.maximum(picked, math.log(LOSS_EPSILON))


def best_tau(z: np.ndarray, y: np.ndarray) -> float:
    """The inverse temperature tau minimising the mean cross-entropy of softmax(tau * z):
    convex in tau (its second derivative is the variance of z under the softmax), so a few
    Newton steps from 1 find it."""
    tau = 1.0
    rows = np.arange(len(y))
    for _ in range(TAU_STEPS):
        t = tau * z
        p = np.exp(t - t.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        ez = (p * z).sum(axis=1)
        grad = float(np.mean(ez - z[rows, y]))
        hess = float(np.mean((p * z * z).sum(axis=1) - ez * ez))
        if hess <= 1e-12:
            break
        step = grad / hess
        tau = min(max(tau - step, tau / 4), tau * 4, TAU_MAX)
        if abs(step) < 1e-4 * tau:
            break
    return tau


class _Objective:
    """The source's cross-entropy under constants (means, stds) on subsets of the calibration
    images."""

    def __init__(self, source: SourceModel, preset: InputConvention, x, y):
        self.source, self.preset, self.x = source, preset, x
        self.y = np.asarray(y).astype(np.int64)
        self.logits = preset.outputs == LOGITS
        self.passes = 0.0

    def _run(self, constants, idx) -> np.ndarray:
        x = self.x[idx]
        self.passes += len(x) / len(self.x)
        return self.source(standardized(self.preset, *constants).apply(x))

    def outputs(self, constants, idx=slice(None)) -> np.ndarray:
        """The model's probabilities under `constants` on x[idx]."""
        out = self._run(constants, idx)
        return softmax(out) if self.logits else out

    def z(self, constants, idx=slice(None)) -> np.ndarray:
        """Its log-scores (logits, or log-probabilities) under `constants` on x[idx]."""
        return scores_of(self._run(constants, idx), self.logits)

    def loss(self, constants, idx=slice(None)) -> float:
        """Mean cross-entropy on x[idx]."""
        return float(np.mean(cross_entropy(self.z(constants, idx), self.y[idx])))

    def fit(self, starts, idx=slice(None), start_evals: int = START_EVALS,
            max_evals: int = MAX_EVALS):
        """The constants of lowest mean cross-entropy on x[idx]: Nelder-Mead for
        `start_evals` evaluations (per coordinate pair) from each start, then on from the
        best one for `max_evals` (likewise)."""
        def f(theta):
            return self.loss(_constants(theta), idx)

        def run(theta, evals):
            c = len(theta) // 2
            steps = np.concatenate([STEP * np.exp(theta[c:]), np.full(c, STEP)])
            return nelder_mead(f, theta, steps, evals * c)

        thetas = [_theta(k) for k in starts]
        if len(thetas) > 1:
            ends = [run(t, start_evals) for t in thetas]
            thetas = [min(ends, key=lambda e: e[1])[0]]
        return _constants(run(thetas[0], max_evals)[0])


# ------------------------------------------------------------------------ the outcome


@dataclass(frozen=True)
class Fit:
    """What fitting found. `preset`: the detected (nearest) preset's score; `fitted`: the
    rounded fitted constants' score on the same images (None: nothing was fitted, `note`
    says why); `used`: whether they replace the preset; `halves`: each half's constants;
    `held_out`: (fit, preset) mean loss with each half scored under the other's fit; `z`:
    the paired difference in standard errors; `decimals` of the rounded mean and std."""

    preset: Score
    fitted: Score | None = None
    used: bool = False
    halves: tuple = ()
    held_out: tuple = ()
    z: float = 0.0
    decimals: tuple = (4, 4)
    note: str = ""
    relabelled: float = 0.0  # the share of calibration images whose label the fit changes
    halves_same: float = 1.0  # the share to which the two halves' constants give one label
    passes: float = 0.0  # passes over the calibration images the fit cost (0: cached)
    cached: bool = False

    def fitted_text(self) -> str:
        """The fitted constants as typed: "(x/255-0.20)/0.45" (with "255-x, " first for
        black-on-white, "BGR, " for a model taking its channels reversed)."""
        c = self.fitted.convention
        text = constants_text(*affine(c), self.decimals)
        if getattr(c, "channel_order", "rgb") == "bgr":
            text = f"BGR, {text}"
        return f"255-x, {text}" if c.ink == BLACK_ON_WHITE else text

    def line(self) -> str:
        """"fitted: (x/255-0.20)/0.45, loss 0.131; nearest preset (x/255-0.1307)/0.3081,
        loss 0.162" (or why nothing was fitted / the preset was kept)."""
        preset = f"{self.preset.convention.describe()}, loss {self.preset.loss:.3f}"
        if self.fitted is None:
            return f"not fitted ({self.note})"
        fitted = f"{self.fitted_text()}, loss {self.fitted.loss:.3f}"
        if self.used:
            return f"fitted: {fitted}; nearest preset {preset}"
        return f"preset kept: {preset}; fitted {fitted} ({self.note})"

    def to_dict(self) -> dict:
        d = {"used": self.used, "line": self.line(),
             "preset": {"convention": self.preset.convention.describe(),
                        "accuracy": self.preset.accuracy, "loss": self.preset.loss}}
        if self.fitted is not None:
            means, stds = affine(self.fitted.convention)
            d["fitted"] = {"mean": list(means), "std": list(stds),
                           "convention": self.fitted_text(),
                           "accuracy": self.fitted.accuracy, "loss": self.fitted.loss}
            d.update(halves=[[list(m), list(sd)] for m, sd in self.halves],
                     halves_same_labels=self.halves_same,
                     held_out_loss=list(self.held_out), z=self.z, relabelled=self.relabelled,
                     rules=_rules())
        return d


@dataclass(frozen=True)
class FittedDetection(Detection):
    """A detection whose affine preset was put to a fit: the fitted row beside the presets."""

    fit: Fit | None = field(default=None)

    def summary(self) -> str:
        if self.fit is None or not self.fit.used:
            base = super().summary()
            return base if self.fit is None else f"{base}; {self.fit.line()}"
        f = self.fit
        what = f.fitted_text()
        if f.fitted.convention.outputs == LOGITS:
            what += " (logits: softmax added)"
        return (f"fitted: {what}, {f.fitted.accuracy:.1%}, loss {f.fitted.loss:.3f}; "
                f"nearest preset {f.preset.convention.describe()}, {f.preset.accuracy:.1%}, "
                f"loss {f.preset.loss:.3f}")

    def table(self) -> list[str]:
        rows = super().table()
        if self.fit is None or self.fit.fitted is None:
            return rows
        f = self.fit
        presets = [s for s in self.scores if s is not f.fitted]
        label = "fitted " + f.fitted_text() + ("" if f.used else " (not used)")
        fitted_row = f"{label:<38} {f.fitted.accuracy:8.1%} {f.fitted.loss:8.3f}"
        return [rows[0], fitted_row] + [s.line() for s in presets]

    def to_dict(self) -> dict:
        d = super().to_dict()
        if self.fit is not None:
            d["fit"] = self.fit.to_dict()
        return d


# ------------------------------------------------------------------------ the rule


def _halves(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of the images, each class split alternately (every other image of a
    class), so both halves hold every class in the same proportion."""
    a, b = [], []
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        a.extend(idx[0::2])
        b.extend(idx[1::2])
    return np.sort(np.array(a, dtype=np.int64)), np.sort(np.array(b, dtype=np.int64))


def _class_name(source: SourceModel, k: int) -> str:
    names = source.contract.class_names
    return str(names[k]) if names and k < len(names) else str(k)


def _too_few(source: SourceModel, y: np.ndarray) -> str | None:
    counts = np.bincount(y, minlength=source.contract.num_classes)
    k = int(np.argmin(counts))
    if counts[k] >= 2 * MIN_PER_CLASS:
        return None
    return (f"class {_class_name(source, k)!r} has {counts[k]} calibration images, a fit "
            f"needs {2 * MIN_PER_CLASS} of every class; or {FLAGS_HINT}")


def _grid_start(objective: _Objective):
    """The best point of a coarse grid of constants shared by every channel (GRID_MEANS x
    GRID_STDS): a start in the right basin when no preset is near the truth (far from it,
    Nelder-Mead from a preset alone can settle in another valley; the grid costs 55 passes)."""
    channels = len(affine(objective.preset)[0])
    grid = [((m,) * channels, (sd,) * channels) for m in GRID_MEANS for sd in GRID_STDS]
    return min(grid, key=objective.loss)


def _round(objective: _Objective, constants, loss: float):
    """The fewest decimals (the means' plus the stds', each kind its own) whose loss on all
    calibration images is within ROUND_LOSS of the unrounded fit's `loss` (the lowest such
    loss on a tie): (constants, (the means' decimals, the stds'))."""
    means, stds = constants
    tried = {}
    for total in range(2 * min(DECIMALS), 2 * max(DECIMALS) + 1):
        best = None
        for dm in DECIMALS:
            ds = total - dm
            if ds not in DECIMALS or min(round(v, ds) for v in stds) <= 0:
                continue
            k = (tuple(round(v, dm) + 0.0 for v in means), tuple(round(v, ds) for v in stds))
            if k not in tried:
                tried[k] = objective.loss(k)
            if tried[k] <= loss * (1 + ROUND_LOSS) and (best is None or tried[k] < best[2]):
                best = (k, (dm, ds), tried[k])
        if best is not None:
            return best[:2]
    return constants, (max(DECIMALS), max(DECIMALS))


def detect_and_fit(source: SourceModel, images: np.ndarray, labels: np.ndarray,
                   flags: ConventionFlags = NO_FLAGS, n: int = DEFAULT_DETECTION_IMAGES,
                   **detect_args) -> Detection:
    """Detection (digitkit.model.detect.detect_convention, `detect_args` passed on) with the
    detected preset's constants put to a fit (`refine`). When detection refuses (no preset
    credible, or two too close to call), the affine presets are fitted anyway (`_rescue`),
    and the fit is taken when the rules accept it and it is credible; otherwise the refusal
    stands."""
    x, y = detection_sample(images, labels, n)
    try:
        detection = detect_convention(source, images, labels, flags, n, **detect_args)
    except ConventionError as refused:
        return _rescue(source, x, y, flags, refused, detect_args)
    return refine(source, detection, x, y, flags)


def _rescue(source: SourceModel, x, y, flags: ConventionFlags, refused: ConventionError,
            detect_args: dict) -> Detection:
    """A fit from the affine presets when detection refused: the best of them (lowest loss)
    is the nearest preset; the fit must pass every rule of `refine` and be credible (the
    floor detection holds presets to). Tried only when that preset reaches at least
    RESCUE_SHARE of the floor: a model no affine map brings near it is not one a fit of two
    constants per channel will make credible, and refusing costs no fit."""
    layout = flags.layout_for(source.input_shape, source.contract)
    pool = [c for c in candidates(source.input_shape, layout=layout, contract=source.contract)
            if flags.allows(c) and affine(c) is not None]
    if not pool or y is None:
        raise refused
    raw = [source(c.apply(x)) for c in pool]
    kind = output_kind(*raw)
    if flags.outputs == PROBABILITIES and kind == LOGITS:
        raise refused  # detection's own refusal: the flag is wrong, no fit changes that
    kind = flags.outputs or kind
    scores = sorted((score(softmax(o) if kind == LOGITS else o, y, c.with_outputs(kind))
                     for o, c in zip(raw, pool, strict=True)), key=lambda sc: sc.loss)
    nearest = scores[0]
    if nearest.accuracy < RESCUE_SHARE * getattr(nearest, "floor", MIN_ACCURACY):
        raise refused
    extra = {k: v for k, v in detect_args.items()
             if k in {f.name for f in fields(Detection)}}
    detection = Detection(nearest.convention, tuple(scores), DETECTED, len(x), **extra)
    fitted = refine(source, detection, x, y, flags)
    fit = getattr(fitted, "fit", None)
    if fit is None or not fit.used or not fit.fitted.credible:
        raise refused
    return fitted


def refine(source: SourceModel, detection: Detection, x: np.ndarray, y: np.ndarray | None,
           flags: ConventionFlags = NO_FLAGS) -> Detection:
    """`detection` put to a fit on the labelled images `x`, `y` (raw pixels of the source's
    contract; the images detection scored). A detection whose convention is not affine is
    returned as it is; otherwise a FittedDetection: the fitted constants when they beat the
    preset beyond noise (see the module docstring), else the preset with the fit beside it.
    ConventionError when the fit beats the preset but the two halves disagree."""
    preset = detection.convention
    if detection.how != DETECTED or affine(preset) is None or y is None:
        return detection
    y = np.asarray(y).astype(np.int64)
    preset_score = detection.best
    few = _too_few(source, y)
    if few:
        return FittedDetection(**_fields(detection), fit=Fit(preset_score, note=few))
    key = _cache_key(source, preset, x, y)
    cached = _read_cache(key, preset, preset_score)
    fit = cached or _fit(source, detection, x, y, flags)
    if cached is None:
        _write_cache(key, fit)
    fields_ = _fields(detection)
    if fit.used:
        fields_.update(convention=fit.fitted.convention,
                       scores=(fit.fitted, *detection.scores), equivalent=())
    return FittedDetection(**fields_, fit=fit)


def _fields(detection: Detection) -> dict:
    """Every field of a Detection (whatever detect.py gives it), to build a FittedDetection."""
    return {f.name: getattr(detection, f.name) for f in fields(Detection)}


def _fit(source: SourceModel, detection: Detection, x, y, flags: ConventionFlags) -> Fit:
    preset = detection.convention
    objective = _Objective(source, preset, x, y)
    starts = [affine(preset)]
    pool = candidates(source.input_shape, layout=preset.layout, contract=preset.contract)
    for c in pool:  # every affine preset the flags allow, in the detected one's ink
        p = affine(c)
        if p is not None and flags.allows(c) and c.ink == preset.ink and p not in starts:
            starts.append(p)
    starts.append(_grid_start(objective))
    full = objective.fit(starts)
    a, b = _halves(y)
    halves = (objective.fit([full], a, max_evals=HALF_EVALS),
              objective.fit([full], b, max_evals=HALF_EVALS))

    # Held out, each at its best temperature (see the module docstring): half a scored under
    # half b's constants and temperature, and the other way round; the preset under the other
    # half's temperature.
    fit_held, preset_held = np.empty(len(y)), np.empty(len(y))
    zp = objective.z(affine(preset))
    for mine, other, theirs in ((a, b, halves[1]), (b, a, halves[0])):
        tau = best_tau(objective.z(theirs, other), y[other])
        fit_held[mine] = cross_entropy(objective.z(theirs, mine), y[mine], tau)
        preset_held[mine] = cross_entropy(zp[mine], y[mine], best_tau(zp[other], y[other]))
    diff = preset_held - fit_held
    se = float(np.std(diff, ddof=1) / math.sqrt(len(diff)))
    gain = float(np.mean(diff))
    z = gain / se if se > 0 else (math.inf if gain > 0 else 0.0)
    held = (float(np.mean(fit_held)), float(np.mean(preset_held)))
    beats = gain >= MIN_GAIN * held[1] and z >= Z_GAIN

    constants, decimals = _round(objective, full, objective.loss(full))
    conv = standardized(preset, *constants)
    probs = objective.outputs(constants)
    fitted = score(probs, y, conv)
    relabelled = float(np.mean(probs.argmax(axis=1) != zp.argmax(axis=1)))
    apart_mean, _ = halves_apart(*halves)
    same = float(np.mean(objective.outputs(halves[0]).argmax(axis=1)
                         == objective.outputs(halves[1]).argmax(axis=1)))
    if beats and (apart_mean > STABLE_MEAN or 1 - same > STABLE_LABELS * relabelled):
        raise ConventionError(
            f"{source.name}: its normalisation fits better than the preset "
            f"{preset.describe()}, but not stably: the two halves of the {len(y):,} "
            f"calibration images fit {constants_text(*halves[0], (3, 3))} and "
            f"{constants_text(*halves[1], (3, 3))}, which label {1 - same:.1%} of them "
            f"differently (the means may differ by {STABLE_MEAN:g}, the labels on at most "
            f"{STABLE_LABELS:g} of the {relabelled:.1%} the fit changes from the preset's); "
            f"give more calibration images, or {FLAGS_HINT}")
    note = "" if beats else (f"held out, each at its best temperature: loss {held[0]:.3f} vs "
                             f"the preset's {held[1]:.3f}, not lower by {MIN_GAIN:.0%} and "
                             f"{Z_GAIN:g} standard errors")
    return Fit(detection.best, fitted, beats, halves, held, z, decimals, note, relabelled,
               halves_same=same, passes=objective.passes)


# ------------------------------------------------------------------------ the cache


def _rules() -> dict:
    """The rules' constants, recorded with a fit and part of its cache key."""
    return {"min_per_class": MIN_PER_CLASS, "min_gain": MIN_GAIN, "z_gain": Z_GAIN,
            "stable_mean": STABLE_MEAN, "stable_labels": STABLE_LABELS,
            "round_loss": ROUND_LOSS}


def _cache_key(source: SourceModel, preset: InputConvention, x, y) -> str:
    """The model (its outputs on the first calibration images under the preset, rounded:
    a changed model changes them), the calibration images and labels, the preset, and the
    rules' version."""
    h = hashlib.sha256()
    out = source(preset.apply(x[:FINGERPRINT_IMAGES]))
    for part in (np.round(out.astype(np.float64), 4), np.ascontiguousarray(x, np.float32),
                 np.asarray(y, np.int64)):
        h.update(np.ascontiguousarray(part).tobytes())
        h.update(str(part.shape).encode())
    h.update(json.dumps([preset.to_dict(), preset.contract.to_dict(), FIT_VERSION, _rules()],
                        sort_keys=True, default=str).encode())
    return h.hexdigest()


def _cache_path(key: str):
    from digitkit.data import cache_dir

    return cache_dir() / CACHE_DIR / f"{key[:24]}.json"


def _read_cache(key: str, preset: InputConvention, preset_score: Score) -> Fit | None:
    path = _cache_path(key)
    try:
        d = json.loads(path.read_text())
        f = d["fitted"]
        conv = standardized(preset, f["mean"], f["std"])
        fitted = Score(conv, float(f["accuracy"]), float(f["loss"]))
        halves = tuple((tuple(m), tuple(sd)) for m, sd in d["halves"])
        return Fit(preset_score, fitted, bool(d["used"]), halves, tuple(d["held_out"]),
                   float(d["z"]), tuple(d["decimals"]), d.get("note", ""),
                   float(d["relabelled"]), float(d.get("halves_same", 1.0)), cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no fit cached (or an unreadable one): fit again


def _write_cache(key: str, fit: Fit) -> None:
    from digitkit.artifacts import write_json_atomic

    if fit.fitted is None:
        return
    c = fit.fitted
    means, stds = affine(c.convention)
    record = {"fitted": {"mean": list(means), "std": list(stds),
                         "accuracy": c.accuracy, "loss": c.loss},
              "used": fit.used, "halves": [[list(m), list(sd)] for m, sd in fit.halves],
              "held_out": list(fit.held_out), "z": fit.z, "decimals": list(fit.decimals),
              "note": fit.note, "relabelled": fit.relabelled, "halves_same": fit.halves_same}
    path = _cache_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)
    except OSError:
        pass  # a cache that cannot be written only costs the next start another fit


__all__ = ["Fit", "FittedDetection", "MIN_PER_CLASS", "affine", "constants_text",
           "halves_apart", "nelder_mead", "refine", "standardized"]
