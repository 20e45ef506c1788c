"""The one contract of batch inference: what a run asks for (`InferSpec`), what an engine is
(`Engine`), what it yields (`EncodedRows`), and the registry that opens one by name.

Every engine is the same three functions, so `run_infer` never asks which one it holds:
- `check(spec)`: everything that can fail before any work (a missing extra, a model of the
  wrong kind, an option the engine does not take), so it fails before discovery and long
  before the output file exists.
- `find(inputs, on_error)`: the input files as path strings, in output order.
- `run(spec, paths)`: a generator of `EncodedRows` (the output file's text of a chunk of
  rows, plus what the summary needs), in input order. Nothing runs before the first `next`;
  closing the generator stops the engine's workers.
- optionally `write_shards(spec, job)`: the engine's workers write the rows into a shard
  directory themselves (`digitkit.infer.shards`) and yield one `ShardDone` per shard: counts,
  failed files and confusion, never a row.

Engines live in their own modules, imported only when asked for (`get_engine(name)`): the
Ray engine's optional dependency is never imported by a local run.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitkit.errors import UsageError
from digitkit.images import MAX_FILE_SIZE
from digitkit.model.conventions import NO_FLAGS, ConventionFlags

#: Engine name -> the module defining its `ENGINE`.
_ENGINE_MODULES = {"local": "digitkit.infer.local", "ray": "digitkit.infer.ray_engine"}
ENGINES = tuple(_ENGINE_MODULES)
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
#: Result formats: CSV or JSON Lines text (`digitkit.infer.rows`), or Parquet columns
#: (`digitkit.infer.parquet`).
FORMATS = ("csv", "jsonl", "parquet")

#: Seconds one file may take to decode in a worker before the worker is stopped and the file
#: gets a "timed out" row. A minute is far beyond what the slowest real image measured takes
#: (BENCHMARKS.md, "Figures that lived in code comments"), leaving room for busier machines
#: and slower disks, while a hung decoder costs one worker a minute, not the run.
DEFAULT_FILE_TIMEOUT = 60.0


@dataclass(frozen=True)
class InputLimits:
    """What one input file may cost a worker: `max_file_size` bytes read (default
    `digitkit.images.MAX_FILE_SIZE`) and `file_timeout` seconds of decoding (None: no limit;
    only worker processes can be stopped, so `workers=0` runs have none)."""

    max_file_size: int = MAX_FILE_SIZE
    file_timeout: float | None = DEFAULT_FILE_TIMEOUT

    def __post_init__(self):
        if self.max_file_size < 1:
            raise UsageError(f"--max-file-size must be at least 1 byte, got {self.max_file_size}")
        if self.file_timeout is not None and not self.file_timeout > 0:
            raise UsageError(f"--file-timeout must be more than 0 seconds, "
                             f"got {self.file_timeout}")


@dataclass(frozen=True)
class InferSpec:
    """What to run: the model and how, independent of where the rows go.

    workers: local engine: worker processes (0: everything in this process; None: one per
        usable core). Ray engine: actors, one CPU each (None: one per CPU of the cluster).
    fmt: "csv", "jsonl" or "parquet"; None takes it from the output file's name
        (`format_for`), Parquet for a shard directory.
    address: the Ray cluster (ray engine only; None: a local Ray instance).
    limits: what one input file may cost (size read, decode time): `InputLimits`.
    convention: the --input-* flags declaring how a model made elsewhere expects its pixels
        (none: digitkit's contract, or detected on MNIST test images from `data`);
        `run_infer` resolves it once and every engine runs the adapted copy.
    """

    model: str | os.PathLike
    runtime: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int | None = None
    top_k: int = DEFAULT_TOP_K
    fmt: str | None = None
    engine: str = DEFAULT_ENGINE
    address: str | None = None
    limits: InputLimits = InputLimits()
    convention: ConventionFlags = NO_FLAGS
    data: str | os.PathLike | None = None

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise UsageError(f"unknown engine {self.engine!r}; choose from {', '.join(ENGINES)}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.top_k < 1 or self.top_k > 10:
            raise UsageError(f"--top-k must be between 1 and 10, got {self.top_k}")
        if self.workers is not None and self.workers < 0:
            raise UsageError(f"--workers must be 0 (decode in-process) or more, "
                             f"got {self.workers}")
        if self.fmt is not None and self.fmt not in FORMATS:
            raise UsageError(f"unknown output format {self.fmt!r}")
        if self.fmt == "parquet":
            from digitkit.infer.columns import require_pyarrow

            require_pyarrow()


@dataclass(slots=True)
class EncodedRows:
    """A chunk of rows as the output file's text, with what the summary needs from them:
    the batch type every engine yields."""

    text: str
    count: int
    errors: list  # (path, reason) of each failed file, in order
    confusion: np.ndarray | None  # (10, 10) [true, predicted] over files in class folders
    table: object = None  # Parquet: the rows as a pyarrow Table (text is then "")


#: `run(spec, paths)`: the contract both engines implement.
EngineRun = Callable[[InferSpec, Iterable[str]], Iterator[EncodedRows]]


@dataclass(frozen=True)
class Engine:
    """One place the work can run (see the module docstring for the contract)."""

    name: str
    check: Callable[[InferSpec], None]
    find: Callable[[Iterable[str | os.PathLike], Callable[[Path, str], None] | None],
                   Iterator[str]]
    run: EngineRun
    #: `write_shards(spec, ShardJob)` -> Iterator[ShardDone], or None: not offered.
    write_shards: Callable | None = None


def get_engine(name: str) -> Engine:
    """The engine called `name`, its module imported now (not before)."""
    if name not in _ENGINE_MODULES:
        raise UsageError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
    return importlib.import_module(_ENGINE_MODULES[name]).ENGINE


__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_ENGINE", "DEFAULT_FILE_TIMEOUT", "DEFAULT_TOP_K",
           "ENGINES", "EncodedRows", "Engine", "EngineRun", "FORMATS", "InferSpec", "InputLimits",
           "get_engine"]
