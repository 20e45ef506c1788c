"""Shard directories: results written by the engine's workers, one file per shard, plus a
manifest written last by the driver.

`-o DIR/` or `-o s3://bucket/prefix/` (a trailing slash names a directory) asks for this.
The driver lists the inputs, cuts the list into shards of `shard_size` files, and hands each
shard to the engine (`BatchEngine.write_shards`); a worker classifies the shard's files and writes
its rows as one file. Only per-shard counts come back (rows, failed files, the confusion
counts): no row passes through the driver, whose work per file is listing and planning
(BENCHMARKS.md, "The driver's own CPU time"), not formatting and writing rows.

Layout of a directory:

    part-000000-3f2a9c01b7de.parquet   one shard: files [0, shard_size) of the listing
    part-000001-8b1e0f44c2a9.parquet   ...
    _manifest.json                     written last: counts, failed files, shards, model
                                       sha256, arguments, versions

- Names are deterministic: the shard's number and a digest of what decides its content (its
  paths, the model's sha256, top-k, format). A retried shard (a node lost mid-run) rewrites
  the same name with the same rows, so reading the directory never gives a file twice; and
  `--resume` skips exactly the shards whose file exists (same inputs, same model), redoing
  the rest. A resume refuses a directory holding shard files of another plan (other inputs
  or model) or made another way (`_provenance.json`, `digitkit.infer.results.provenance`), and
  deletes nothing; `--force` starts over and deletes them at the end.
- Each shard appears whole or not at all (`digitkit.infer.storage.stores`: a temporary name and a
  rename on file systems, one upload on object stores).
- Hidden names (`.part-...tmp`) and `_manifest.json` are what pyarrow, pandas, DuckDB and
  Spark skip when they read the directory as a dataset. A directory without a manifest is a
  run that did not finish: `--resume` finishes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from itertools import islice

from digitkit.errors import DigitkitError, OutputExistsError, UsageError
from digitkit.infer.results import provenance
from digitkit.infer.results.formats import RESULT_FORMATS, result_format
from digitkit.infer.results.rows import (
    COLUMNS,
    EncodedRows,
    RowCounts,
    confusion_of,
    label_indices,
)
from digitkit.infer.spec import InferSpec, ShardDone, ShardJob
from digitkit.infer.storage.stores import Destination, is_uri
from digitkit.infer.summary import InferSummary

#: Files per shard: ~2,000 files are a fraction of a second of one worker's work and a small
#: Parquet file: large against Ray's per-task overhead and a store's per-object latency,
#: small enough that a lost node costs seconds of work and 10,000 files still make 5 shards
#: to balance. 10^8 files make ~49,000 files.
DEFAULT_SHARD_SIZE = 2048
#: Shards are Parquet unless --format says otherwise: typed columns that every dataframe
#: and query engine reads without parsing.
DEFAULT_SHARD_FORMAT = "parquet"
MANIFEST = "_manifest.json"
_SHARD_SUFFIXES = "|".join(re.escape(f.suffix) for f in RESULT_FORMATS.values())
SHARD_RE = re.compile(rf"^part-(\d{{6,}})-([0-9a-f]{{12}})({_SHARD_SUFFIXES})$")
TEMP_RE = re.compile(r"^\.part-.*\.tmp$")
#: Failed files named in the manifest: 10,000 keep it under ~1 MB. A run with more failures
#: has a systematic problem that the first ones show, and every error row is in the shards.
MANIFEST_FAILED_LIMIT = 10_000


@dataclass(frozen=True)
class ShardOutput:
    """Where and how big: `-o DIR/` with `--shard-size`."""

    dest: str
    shard_size: int = DEFAULT_SHARD_SIZE

    def __post_init__(self):
        if self.shard_size < 1:
            raise UsageError(f"--shard-size must be at least 1, got {self.shard_size}")


@dataclass(frozen=True)
class Shard:
    index: int
    name: str
    #: The shard's input paths joined by NUL (no path holds one) and encoded with
    #: surrogateescape (a file name need not be UTF-8): one bytes object, not one per file.
    paths: bytes
    done: bool  # its file exists already (resume): the worker only reads back its counts


def is_shard_output(output) -> bool:
    return isinstance(output, ShardOutput) or (
        isinstance(output, (str, os.PathLike)) and str(output).endswith(("/", os.sep)))


# -- one shard's bytes, and its counts read back ---------------------------------------------


def shard_bytes(rows: EncodedRows, fmt: str) -> bytes:
    """One shard file's bytes: the rows of its files, in format `fmt`."""
    return result_format(fmt).shard_bytes(rows.data)


def shard_counts(data: bytes, fmt: str, names: tuple[str, ...] | None = None) -> RowCounts:
    """The counts of a shard file already written (resume), as its writer reported them;
    `names`: the class names its rows carry (None: digits)."""
    paths, labels, errors = result_format(fmt).shard_rows(data, names)
    failed = [(p, e) for p, e in zip(paths, errors, strict=True) if e]
    good = [(p, lab) for p, lab, e in zip(paths, labels, errors, strict=True) if not e]
    confusion = confusion_of([p for p, _ in good], label_indices([lab for _, lab in good], names),
                             names)
    return RowCounts(len(paths), failed, confusion)


# -- the plan -------------------------------------------------------------------------------


def plan_shards(paths: Iterable[str], size: int, key: str, fmt: str,
                existing: set[str]) -> list[Shard]:
    """Cut the listing into shards of `size` files: per file a list append and its share
    of one join and one digest (no object per file)."""
    shards, it, k = [], iter(paths), 0
    while chunk := list(islice(it, size)):
        joined = "\0".join(chunk).encode("utf-8", "surrogateescape")
        h = hashlib.blake2b(key.encode() + b"\0", digest_size=6)
        h.update(joined)
        name = f"part-{k:06d}-{h.hexdigest()}{result_format(fmt).suffix}"
        shards.append(Shard(k, name, joined, name in existing))
        k += 1
    return shards


def _model_sha256(model) -> str:
    from digitkit.artifacts import sha256_file, sha256_tree

    return sha256_tree(model) if os.path.isdir(model) else sha256_file(model)


# -- one run ------------------------------------------------------------------------------


class ShardRun:
    """`run_infer` for a shard directory, around the engine's `write_shards`: opening it
    lists the inputs, plans the shards and prepares the directory; `add` counts each
    `ShardDone`; `finish` checks that every shard came back once, tidies up and writes the
    manifest, last."""

    def __init__(self, spec: InferSpec, inputs: list, output, *, resume: bool, force: bool,
                 find: Callable[[list], Iterator[str]], record=None):
        self.out = output if isinstance(output, ShardOutput) else ShardOutput(str(output))
        self.spec = replace(spec, fmt=spec.fmt or DEFAULT_SHARD_FORMAT)
        self.inputs = inputs
        self.dest = Destination(self.out.dest)
        self.found = self.dest.names()
        ours = {n for n in self.found if SHARD_RE.match(n) or TEMP_RE.match(n)
                or n in (MANIFEST, provenance.SHARD_RECORD)}
        if ours and not (resume or force):
            raise OutputExistsError(self.out.dest, "pass --resume to finish it, or --force to "
                                                   "overwrite it")
        shard_files = {n for n in self.found if SHARD_RE.match(n)}
        if record is not None:  # made another way: refused before any listing or work
            provenance.check_shard_dir(self.dest, self.found, shard_files, record,
                                       resume and not force)
        self.force = force
        self.sha = _model_sha256(self.spec.model)
        key = f"{self.sha}\0{self.spec.top_k}\0{self.spec.fmt}"
        self.t0 = time.monotonic()
        self.shards = plan_shards(find(inputs), self.out.shard_size, key, self.spec.fmt,
                                  self.found if resume else set())
        if not self.shards:
            raise DigitkitError(f"no images found in {', '.join(map(str, inputs))}")
        if resume and not force:  # shards of another plan: refused, never deleted
            provenance.check_shard_plan(self.out.dest,
                                        shard_files - {s.name for s in self.shards})
        self.dest.prepare()
        if MANIFEST in self.found:  # no longer a finished directory until this run finishes
            self.dest.delete(MANIFEST)
        if record is not None:
            provenance.write_shard_record(self.dest, record)
        self.tally = _Tally(InferSummary(output=self.out.dest, class_names=self.spec.names))
        self.job = ShardJob(_worker_dest(self.dest), self.spec.fmt, self.shards)

    @property
    def summary(self) -> InferSummary:
        return self.tally.summary

    def add(self, done: ShardDone, warn: Callable[[str], None]) -> int:
        """Count one finished shard; returns its files (for the progress line)."""
        self.tally.add(done, warn)
        return done.count

    def finish(self) -> InferSummary:
        missing = [s.name for s in self.shards if s.index not in self.tally.rows]
        if missing:
            raise DigitkitError(f"{len(missing)} shard(s) were not written (first: "
                                f"{missing[0]}); rerun with --resume")
        _tidy(self.dest, self.found, {s.name for s in self.shards}, shards_too=self.force)
        manifest = _manifest(self, time.monotonic() - self.t0)
        self.dest.write(MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
        return self.summary


def _worker_dest(dest: Destination) -> str:
    return dest.dest if is_uri(dest.dest) else dest.root


@dataclass
class _Tally:
    """What the driver keeps of the shards: per shard its row count, the failed files."""

    summary: InferSummary
    rows: dict = field(default_factory=dict)  # shard index -> rows
    errors: dict = field(default_factory=dict)  # shard index -> [(path, reason)]

    def add(self, done: ShardDone, warn) -> None:
        if done.index in self.rows:
            return  # reported twice (a retried task): the same file, counted once
        self.rows[done.index] = done.count
        if done.errors:
            self.errors[done.index] = done.errors
        if not done.resumed:
            self.summary.add_batch(done)
            for path, reason in done.errors:
                warn(f"warning: {path}: {reason}")
            return
        self.summary.resumed += done.count
        self.summary.failed += len(done.errors)
        if done.confusion is not None:
            self.summary.confusion += done.confusion


def _tidy(dest: Destination, found: set[str], keep: set[str], shards_too: bool) -> None:
    """Delete temporary files of interrupted writes and, under --force only, shard files of
    another plan (a resume refuses those: `provenance.check_shard_plan`)."""
    for name in sorted(found):
        if (shards_too and SHARD_RE.match(name) and name not in keep) or TEMP_RE.match(name):
            try:
                dest.delete(name)
            except FileNotFoundError:
                pass


def _manifest(run: ShardRun, seconds: float) -> dict:
    from digitkit.environment import RECORDED_PACKAGES, library_versions

    spec, inputs, out, shards, tally = run.spec, run.inputs, run.out, run.shards, run.tally
    summary = tally.summary
    failed = [e for i in sorted(tally.errors) for e in tally.errors[i]]  # input order
    return {
        "complete": True,
        "format": spec.fmt,
        "columns": list(COLUMNS),
        "files": summary.total,
        "written": summary.written,
        "resumed": summary.resumed,
        "failed": summary.failed,
        "failed_files": [{"path": p, "error": e} for p, e in failed[:MANIFEST_FAILED_LIMIT]],
        "failed_files_truncated": len(failed) > MANIFEST_FAILED_LIMIT,
        "shard_size": out.shard_size,
        "shards": [{"name": s.name, "files": tally.rows[s.index]} for s in shards],
        "model": {"path": str(spec.model), "sha256": run.sha},
        "arguments": {"inputs": [str(i) for i in inputs], "output": out.dest,
                      "engine": spec.engine, "runtime": spec.runtime,
                      "batch_size": spec.batch_size, "workers": spec.workers,
                      "top_k": spec.top_k, "address": spec.address,
                      "limits": asdict(spec.limits)},
        "seconds": round(seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": library_versions(RECORDED_PACKAGES + ("pyarrow",)),
    }

