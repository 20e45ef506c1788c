"""What a `digitkit bench` run measures: every option, its default and the reason for it.

Imported by the CLI for its --help defaults, so it stays instant: no numpy, no runtime (the
runtime table it reads is light).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from digitkit.environment import usable_cpus
from digitkit.errors import UsageError
from digitkit.predictors.devices import DEFAULT_DEVICE, device_kind, parse_device
from digitkit.predictors.runtimes import RUNTIMES, runtime_groups

#: Runtime groups run when --runtimes is not given: all of them, in the runtime table's order,
#: each where its copy exists (and, for the optional runtimes, where they are installed).
DEFAULT_RUNTIMES = tuple(runtime_groups())
#: The runtime that runs "when present" inside the onnxruntime group: an export made without
#: --quantize has no int8 copy, and that is normal, not worth an error or a note.
INT8_RUNTIME = "onnxruntime-int8"

#: From one image (latency) to a batch large enough that per-call overhead no longer matters.
DEFAULT_BATCH_SIZES = (1, 8, 32, 128, 512, 2048)
#: Seconds of timed calls per runtime and batch size: enough for thousands of small-batch
#: calls and tens of large ones, while a full 6-size, 5-runtime run stays a few minutes.
DEFAULT_DURATION = 3.0
#: Untimed calls per batch size before timing: lets lazy allocation, oneDNN primitive caches
#: and tf.function tracing settle (the first call is reported separately).
DEFAULT_WARMUP = 5
#: One round per runtime: enough on a quiet machine; on a shared one --repeat R keeps the best
#: of R round-robin rounds, since outside load can slow a round down but never speed it up.
DEFAULT_REPEAT = 1
#: None: ONNX Runtime's threads and spinning follow the batch size as
#: digitkit.predictors.ort.regime_settings decides, the rule `digitkit infer` runs by, so a
#: figure here is a configuration infer uses. True/False pins spinning (with --threads
#: threads) for every batch size instead.
DEFAULT_ORT_SPINNING = None
#: How many MNIST test images every runtime classifies for the cross-check: all of them.
DEFAULT_CHECK_IMAGES = 10000

#: Minimum top-1 agreement with the reference. Float copies of the same weights should agree
#: on every image bar near-ties; 99.9% allows ten ties in 10,000 and catches any real bug.
FLOAT_AGREEMENT = 0.999
#: Reduced precision (int8, bf16) legitimately moves a few near-tie images; below 99%
#: something is wrong (bad calibration, a broken quantized op), not rounding.
INT8_AGREEMENT = 0.99


def _items(value) -> list:
    """A comma-separated string (as typed on the command line) or a sequence, as a list."""
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    return list(value)


def parse_runtimes(text: str | Sequence[str] | None) -> tuple[list[str], set[str]]:
    """Runtime groups or runtime names -> (runtimes, runtimes that must run).

    A runtime named by the user must find its model copy; int8 reached through the
    "onnxruntime" group runs only when an int8 copy is present. With no --runtimes, every
    runtime whose copy exists runs.
    """
    groups = runtime_groups()
    if text is None:
        return [e for r in DEFAULT_RUNTIMES for e in groups[r]], set()
    runtimes: list[str] = []
    required: set[str] = set()
    for item in _items(text):
        if item in groups:
            runtimes += groups[item]
            required |= {e for e in groups[item] if e != INT8_RUNTIME}
        elif item in RUNTIMES:
            runtimes.append(item)
            required.add(item)
        else:
            raise UsageError(f"--runtimes: unknown runtime {item!r}; choose from "
                             f"{', '.join(groups)} or engines {', '.join(RUNTIMES)}")
    if not runtimes:
        raise UsageError("--runtimes: no runtime given")
    return list(dict.fromkeys(runtimes)), required


def parse_batch_sizes(text: str | Sequence[int] | None) -> list[int]:
    if text is None:
        return list(DEFAULT_BATCH_SIZES)
    sizes = []
    for item in _items(text):
        try:
            b = int(item)
        except ValueError as err:
            raise UsageError(f"--batch-sizes: {item!r} is not a whole number") from err
        if b < 1:
            raise UsageError(f"--batch-sizes: batch size must be at least 1, got {b}")
        sizes.append(b)
    if not sizes:
        raise UsageError("--batch-sizes: no batch size given")
    return sorted(set(sizes))


def on_device(runtimes: list[str], device: str) -> tuple[list[str], dict[str, str]]:
    """(runtimes that run on `device`, {runtime: why not} for those that have no such device).

    A runtime without such a device is listed as skipped, like one not installed; a device
    that is not there is refused in one line (DependencyError: no such provider or plugin
    device) before any work, and so is a device none of the runtimes has (UsageError)."""
    kind = device_kind(device)
    runnable, skipped = [], {}
    for name in runtimes:
        row = RUNTIMES[name]
        if kind not in row.devices:
            skipped[name] = f"runs on {' or '.join(row.devices)}, not {kind}"
            continue
        row.check_device(device)
        runnable.append(name)
    if not runnable:
        raise UsageError(f"--device {device}: no requested runtime runs on it (" + "; ".join(
            f"{r}: {why}" for r, why in skipped.items()) + ")")
    return runnable, skipped


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run, as the options of `digitkit bench` describe it.

    `runtimes` and `batch_sizes` are comma-separated text (as typed) or sequences; None means
    the defaults above. `threads` None means every CPU this process may use; with neither
    `duration` nor `iterations`, each batch size is timed for DEFAULT_DURATION seconds.
    An invalid combination raises UsageError on construction.
    """

    models: Sequence[str | os.PathLike]
    runtimes: str | Sequence[str] | None = None
    batch_sizes: str | Sequence[int] | None = None
    threads: int | None = None
    duration: float | None = None
    iterations: int | None = None
    warmup: int = DEFAULT_WARMUP
    repeat: int = DEFAULT_REPEAT
    ort_spinning: bool | None = DEFAULT_ORT_SPINNING
    images: Sequence[str | os.PathLike] | None = None  # files/folders for the end-to-end pass
    data: str | os.PathLike | None = None  # MNIST location; None: digitkit.data's resolution
    check_images: int = DEFAULT_CHECK_IMAGES
    trust_model: bool = False  # run models model.safety refuses (--trust-model)
    device: str = DEFAULT_DEVICE  # --device: cpu, cuda[:N], tensorrt[:N], gpu[:N]
    #: a labelled folder (one subfolder per class, named like the model's classes): the
    #: inputs timed and the accuracy column; None: MNIST for digit models, seeded random
    #: pixels of the contract's shape (no accuracy) for any other classifier
    calibration: str | os.PathLike | None = None

    def __post_init__(self):
        object.__setattr__(self, "device", parse_device(self.device))
        self.requested_runtimes  # noqa: B018 - parse now, so a bad value fails before any work
        self.sizes  # noqa: B018
        if self.thread_count < 1:
            raise UsageError(f"--threads must be at least 1, got {self.thread_count}")
        if self.duration is not None and self.iterations is not None:
            raise UsageError("--duration and --iterations are alternatives; give one")
        if self.duration is not None and self.duration <= 0:
            raise UsageError(f"--duration must be positive, got {self.duration}")
        if self.iterations is not None and self.iterations < 1:
            raise UsageError(f"--iterations must be at least 1, got {self.iterations}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.check_images < 1:
            raise UsageError(f"--check-images must be at least 1, got {self.check_images}")
        if self.repeat < 1:
            raise UsageError(f"--repeat must be at least 1, got {self.repeat}")

    @property
    def requested_runtimes(self) -> tuple[list[str], set[str]]:
        """(runtimes in order, runtimes whose copy must exist); see parse_runtimes."""
        return parse_runtimes(self.runtimes)

    @property
    def sizes(self) -> list[int]:
        return parse_batch_sizes(self.batch_sizes)

    @property
    def thread_count(self) -> int:
        return usable_cpus() if self.threads is None else int(self.threads)

    @property
    def timed_duration(self) -> float | None:
        """Seconds of timed calls per batch size; None when --iterations counts them."""
        if self.duration is None and self.iterations is None:
            return DEFAULT_DURATION
        return self.duration
