"""The one contract of batch inference: what a run asks for (`InferSpec`), what a batch
engine is (`BatchEngine`), what it yields (`EncodedRows`), and the registry that opens one by
name (`BATCH_ENGINES`, `get_engine`).

Engines live in their own modules (`digitkit.infer.engines`), imported only when asked for:
the Ray engine's optional dependency is never imported by a local run.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

from digitkit.errors import UsageError
from digitkit.images import MAX_FILE_SIZE
from digitkit.infer.results.formats import result_format
from digitkit.infer.results.rows import EncodedRows, RowCounts
from digitkit.model.conventions import NO_FLAGS, ConventionFlags

#: Batch engine name -> the module defining its `ENGINE` (a `BatchEngine`), imported by
#: `get_engine` only when a run asks for it.
BATCH_ENGINES = {"local": "digitkit.infer.engines.local", "ray": "digitkit.infer.engines.ray"}
#: Local processes: they need no extra and no cluster, and one machine's cores already
#: decode tens of thousands of small images a second.
DEFAULT_ENGINE = "local"
#: 256 images per batch: large enough that per-batch costs (IPC, an inference call, one
#: write) vanish per image, small enough that rows stream out steadily and a Ctrl-C loses
#: little work. In Ray a batch is also one task's worth of work, large against Ray's
#: per-task overhead and small enough that 10,000 files still make ~40 batches to balance
#: over the workers.
DEFAULT_BATCH_SIZE = 256
#: Three labels show the runner-ups of a doubtful prediction without bloating every row.
DEFAULT_TOP_K = 3

#: Seconds one file may take to decode in a worker before the worker is stopped and the file
#: gets a "timed out" row. A minute is far beyond what the slowest real image measured takes
#: (BENCHMARKS.md, "Figures that lived in code comments"), leaving room for busier machines
#: and slower disks, while a hung decoder costs one worker a minute, not the run.
DEFAULT_FILE_TIMEOUT = 60.0
#: The longest per-file time limit (~11.6 days); "no limit" is spelled None (--file-timeout 0).
#: Longer would overflow the kernel timer (setitimer) and mean nothing anyway.
MAX_FILE_TIMEOUT = 1e6
#: The largest --max-file-size: the largest file size there is. Every file is read whole into
#: memory, so there is no "no limit" for size.
MAX_SIZE_LIMIT = 2**63 - 1


@dataclass(frozen=True)
class InputLimits:
    """What one input file may cost a worker: `max_file_size` bytes read (default
    `digitkit.images.MAX_FILE_SIZE`) and `file_timeout` seconds of decoding (None: no limit;
    only worker processes can be stopped, so `workers=0` runs have none)."""

    max_file_size: int = MAX_FILE_SIZE
    file_timeout: float | None = DEFAULT_FILE_TIMEOUT

    def __post_init__(self):
        if not 1 <= self.max_file_size <= MAX_SIZE_LIMIT:
            raise UsageError(f"--max-file-size must be between 1 byte and {MAX_SIZE_LIMIT:,} "
                             f"bytes, got {self.max_file_size}")
        if self.file_timeout is not None and not 0 < self.file_timeout <= MAX_FILE_TIMEOUT:
            raise UsageError(f"--file-timeout must be more than 0 and at most "
                             f"{MAX_FILE_TIMEOUT:,.0f} seconds (0 on the command line: no "
                             f"limit), got {self.file_timeout}")


@dataclass(frozen=True)
class InferSpec:
    """What to run: the model and how, independent of where the rows go.

    workers: local engine: worker processes (0: everything in this process; None: one per
        usable core). Ray engine: actors, one CPU each (None: one per CPU of the cluster).
    fmt: a result format's name (`digitkit.infer.results.formats.RESULT_FORMATS`); None
        takes it from the output file's name (`format_for`), Parquet for a shard directory.
    address: the Ray cluster (ray engine only; None: a local Ray instance).
    limits: what one input file may cost (size read, decode time): `InputLimits`.
    runtime, precision: what the user asked for (`infer --runtime --precision`; runtime
        None: the model file's natural runtime). `run_infer` resolves MODEL once
        (`predictors.serving.serving_model`) into the copy that runs (an export directory's
        own copy), and every engine opens the same row of the runtime table on it.
    device: where the runtime runs (`--device`: cpu, cuda[:N], tensorrt[:N], gpu[:N];
        `predictors.devices.parse_device`); `run_infer` refuses, before any work, a device
        the runtime does not have or that is not there. runtime "auto": `run_infer` chooses
        the row first (`predictors.choice.choose`), precision "any" letting it choose that too.
    calibration: runtime "auto" on a general image classifier: the labelled folder (one
        subfolder per class, named like its classes) whose images the gate is measured on
        (`predictors.choice.check_images`; None: the folder its export.json records).
    convention: the --input-* flags declaring how a model made elsewhere expects its pixels
        (none: digitkit's contract, or detected on MNIST test images from `data`);
        `run_infer` resolves it once and every engine runs the adapted copy.
    trust_model: run a model the model layer's safety rule refuses (model.safety: Keras
        layers that run code, a SavedModel graph that does more than compute).
    contract: the model contract the files are decoded and named by (a
        `digitkit.model.contract.ModelContract`); None: read from the model
        (`predictors.runnable.model_contract`). `run_infer` resolves it once, with the copy
        that runs, and every engine, worker and actor receives it.
    """

    model: str | os.PathLike
    runtime: str | None = None
    precision: str = "fp32"
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int | None = None
    top_k: int = DEFAULT_TOP_K
    fmt: str | None = None
    engine: str = DEFAULT_ENGINE
    address: str | None = None
    limits: InputLimits = InputLimits()
    convention: ConventionFlags = NO_FLAGS
    data: str | os.PathLike | None = None
    trust_model: bool = False
    device: str = "cpu"
    contract: object = None
    calibration: str | os.PathLike | None = None

    @property
    def resolved_contract(self):
        """The contract (`contract`, else what the model carries: one read of its file)."""
        if self.contract is not None:
            return self.contract
        from digitkit.predictors.runnable import model_contract

        return model_contract(self.model)

    @property
    def names(self) -> tuple[str, ...] | None:
        """The class names rows carry (None: a digit model's digits)."""
        from digitkit.infer.results.rows import row_names

        return row_names(self.resolved_contract)

    def __post_init__(self):
        from digitkit.predictors.devices import parse_device

        object.__setattr__(self, "device", parse_device(self.device))
        if self.engine not in BATCH_ENGINES:
            raise UsageError(f"unknown engine {self.engine!r}; choose from "
                             f"{', '.join(BATCH_ENGINES)}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.top_k < 1 or self.top_k > 10:
            raise UsageError(f"--top-k must be between 1 and 10, got {self.top_k}")
        if self.workers is not None and self.workers < 0:
            raise UsageError(f"--workers must be 0 (decode in-process) or more, "
                             f"got {self.workers}")
        if self.fmt is not None:
            result_format(self.fmt).require()  # an unknown name or a missing extra: now


@dataclass(frozen=True)
class ShardJob:
    """What an engine's `write_shards` gets: the destination (absolute path or URI), the
    format and the shards."""

    dest: str
    fmt: str
    shards: list


@dataclass(slots=True)
class ShardDone(RowCounts):
    """One shard finished by a worker: its number, its counts, and whether its file was there
    already (resume: the worker only read its counts back)."""

    index: int
    resumed: bool


class BatchEngine(ABC):
    """One place the work can run. `run_infer` never asks which one it holds:

    - `check(spec)`: everything that can fail before any work (a missing extra, a model of
      the wrong kind, an option the engine does not take), so it fails before discovery and
      long before the output file exists.
    - `find(inputs, on_error)`: the input files as path strings, in output order.
    - `run(spec, paths)`: a generator of `EncodedRows` (a chunk of rows in `spec.fmt`, with
      what the summary needs), in input order. Nothing runs before the first `next`;
      closing the generator stops the engine's workers.
    - `write_shards(spec, job)`, offered when `writes_shards`: the engine's workers write
      the rows into a shard directory themselves (`digitkit.infer.storage.shards`) and it
      yields one `ShardDone` per shard: counts, failed files and confusion, never a row.
    """

    name: ClassVar[str]
    writes_shards: ClassVar[bool] = False

    @abstractmethod
    def check(self, spec: InferSpec) -> None: ...

    @abstractmethod
    def find(self, inputs: Iterable[str | os.PathLike],
             on_error: Callable[[os.PathLike, str], None] | None = None) -> Iterator[str]: ...

    @abstractmethod
    def run(self, spec: InferSpec, paths: Iterable[str]) -> Iterator[EncodedRows]: ...

    def write_shards(self, spec: InferSpec, job: ShardJob) -> Iterator[ShardDone]:
        raise NotImplementedError(f"the {self.name} engine does not write shard directories")


def get_engine(name: str) -> BatchEngine:
    """The batch engine called `name`, its module imported now (not before)."""
    if name not in BATCH_ENGINES:
        raise UsageError(f"unknown engine {name!r}; choose from {', '.join(BATCH_ENGINES)}")
    return importlib.import_module(BATCH_ENGINES[name]).ENGINE


__all__ = ["BATCH_ENGINES", "BatchEngine", "DEFAULT_BATCH_SIZE", "DEFAULT_ENGINE",
           "DEFAULT_FILE_TIMEOUT", "DEFAULT_TOP_K", "MAX_FILE_TIMEOUT", "EncodedRows",
           "InferSpec", "InputLimits", "get_engine"]
