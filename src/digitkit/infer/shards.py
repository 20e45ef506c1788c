"""Shard directories: results written by the engine's workers, one file per shard, plus a
manifest written last by the driver.

`-o DIR/` or `-o s3://bucket/prefix/` (a trailing slash names a directory) asks for this.
The driver lists the inputs, cuts the list into shards of `shard_size` files, and hands each
shard to the engine (`Engine.write_shards`); a worker classifies the shard's files and writes
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
  or model) or made another way (`_provenance.json`, `digitkit.infer.provenance`), and
  deletes nothing; `--force` starts over and deletes them at the end.
- Each shard appears whole or not at all (`digitkit.infer.stores`: a temporary name and a
  rename on file systems, one upload on object stores).
- Hidden names (`.part-...tmp`) and `_manifest.json` are what pyarrow, pandas, DuckDB and
  Spark skip when they read the directory as a dataset. A directory without a manifest is a
  run that did not finish: `--resume` finishes it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from itertools import islice

import numpy as np

from digitkit.errors import DigitkitError, OutputExistsError, UsageError
from digitkit.infer import provenance
from digitkit.infer.rows import (
    COLUMNS,
    CSV_HEADER,
    confusion_of,
    parse_csv_record,
    parse_json_line,
)
from digitkit.infer.spec import EncodedRows, InferSpec
from digitkit.infer.stores import Destination, is_uri
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
SHARD_RE = re.compile(r"^part-(\d{6,})-([0-9a-f]{12})\.(parquet|csv|jsonl)$")
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


@dataclass(frozen=True)
class ShardJob:
    """What an engine's `write_shards` gets: the destination (absolute path or URI), the
    format and the shards."""

    dest: str
    fmt: str
    shards: list


@dataclass(slots=True)
class ShardDone:
    """One shard finished by a worker: its counts (an `EncodedRows` without rows)."""

    index: int
    rows: EncodedRows
    resumed: bool


def is_shard_output(output) -> bool:
    return isinstance(output, ShardOutput) or (
        isinstance(output, (str, os.PathLike)) and str(output).endswith(("/", os.sep)))


# -- one shard's bytes, and its counts read back ---------------------------------------------


def shard_bytes(rows: EncodedRows, fmt: str) -> bytes:
    if fmt == "parquet":
        from digitkit.infer.columns import table_bytes

        return table_bytes(rows.table)
    return ((CSV_HEADER if fmt == "csv" else "") + rows.text).encode("utf-8")


def shard_counts(data: bytes, fmt: str) -> EncodedRows:
    """The counts of a shard file already written (resume), as its writer reported them."""
    if fmt == "parquet":
        from digitkit.infer.columns import read_columns

        cols = read_columns(data, ["path", "label", "error"])
        paths, labels, errors = cols["path"], cols["label"], cols["error"]
    else:
        text = data.decode("utf-8")
        if fmt == "csv":
            records = list(csv.reader(io.StringIO(text)))
            if not records or records[0] != list(COLUMNS):
                raise ValueError("not a digitkit CSV shard")
            rows = [parse_csv_record(r) for r in records[1:]]
        else:
            rows = [parse_json_line(line) for line in text.splitlines() if line]
        paths = [r.path for r in rows]
        labels = [r.label for r in rows]
        errors = [r.error for r in rows]
    failed = [(p, e) for p, e in zip(paths, errors, strict=True) if e]
    good = [(p, lab) for p, lab, e in zip(paths, labels, errors, strict=True) if not e]
    confusion = confusion_of([p for p, _ in good], np.array([lab for _, lab in good], np.int64))
    return EncodedRows("", len(paths), failed, confusion)


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
        name = f"part-{k:06d}-{h.hexdigest()}.{fmt}"
        shards.append(Shard(k, name, joined, name in existing))
        k += 1
    return shards


def _model_sha256(model) -> str:
    from digitkit.artifacts import sha256_file, sha256_tree

    return sha256_tree(model) if os.path.isdir(model) else sha256_file(model)


# -- the driver -----------------------------------------------------------------------------


def write_shard_dir(eng, spec: InferSpec, inputs: list, output, *, resume: bool, force: bool,
                    bar, warn: Callable[[str], None], record=None) -> InferSummary:
    """`run_infer` for a shard directory: list, plan, let the engine's workers write the
    shards, check that every shard came back once, tidy up, write the manifest."""
    if eng.write_shards is None:
        raise UsageError(f"the {eng.name} engine writes one result file; a shard directory "
                         "(-o DIR/) is written by the workers of --engine ray")
    out = output if isinstance(output, ShardOutput) else ShardOutput(str(output))
    spec = replace(spec, fmt=spec.fmt or DEFAULT_SHARD_FORMAT)
    dest = Destination(out.dest)
    found = dest.names()
    ours = {n for n in found if SHARD_RE.match(n) or TEMP_RE.match(n) or n == MANIFEST
            or n == provenance.SHARD_RECORD}
    if ours and not (resume or force):
        raise OutputExistsError(out.dest, "pass --resume to finish it, or --force to "
                                          "overwrite it")
    if record is not None:  # made another way: refused before any listing or work
        provenance.check_shard_dir(dest, found, {n for n in found if SHARD_RE.match(n)},
                                   record, resume and not force)
    sha = _model_sha256(spec.model)
    key = f"{sha}\0{spec.top_k}\0{spec.fmt}"
    t0 = time.monotonic()
    paths = eng.find(inputs, lambda path, reason: warn(f"warning: {path}: {reason}"))
    shards = plan_shards(paths, out.shard_size, key, spec.fmt, found if resume else set())
    if not shards:
        raise DigitkitError(f"no images found in {', '.join(map(str, inputs))}")
    if resume and not force:
        provenance.check_shard_plan(out.dest, {n for n in found if SHARD_RE.match(n)}
                                    - {s.name for s in shards})
    dest.prepare()
    if MANIFEST in found:  # no longer a finished directory until this run finishes
        dest.delete(MANIFEST)
    if record is not None:
        provenance.write_shard_record(dest, record)
    tally = _Tally(InferSummary(output=out.dest))
    start = time.monotonic()
    results = eng.write_shards(spec, ShardJob(_worker_dest(dest), spec.fmt, shards))
    try:
        for done in results:
            tally.add(done, warn)
            bar.update(done.rows.count)
    finally:
        results.close()  # stops the engine's workers now, also on Ctrl-C or an error
        tally.summary.seconds = time.monotonic() - start
        bar.close()
    missing = [s.name for s in shards if s.index not in tally.rows]
    if missing:
        raise DigitkitError(f"{len(missing)} shard(s) were not written (first: {missing[0]}); "
                            "rerun with --resume")
    _tidy(dest, found, {s.name for s in shards}, shards_too=force)
    manifest = _manifest(spec, inputs, out, shards, tally, sha, time.monotonic() - t0)
    dest.write(MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    return tally.summary


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
        self.rows[done.index] = done.rows.count
        if done.rows.errors:
            self.errors[done.index] = done.rows.errors
        if not done.resumed:
            self.summary.add_batch(done.rows)
            for path, reason in done.rows.errors:
                warn(f"warning: {path}: {reason}")
            return
        self.summary.resumed += done.rows.count
        self.summary.failed += len(done.rows.errors)
        if done.rows.confusion is not None:
            self.summary.confusion += done.rows.confusion


def _tidy(dest: Destination, found: set[str], keep: set[str], shards_too: bool) -> None:
    """Delete temporary files of interrupted writes and, under --force only, shard files of
    another plan (a resume refuses those: `provenance.check_shard_plan`)."""
    for name in sorted(found):
        if (shards_too and SHARD_RE.match(name) and name not in keep) or TEMP_RE.match(name):
            try:
                dest.delete(name)
            except FileNotFoundError:
                pass


def _manifest(spec, inputs, out, shards, tally: _Tally, sha, seconds) -> dict:
    from digitkit.environment import RECORDED_PACKAGES, library_versions

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
        "model": {"path": str(spec.model), "sha256": sha},
        "arguments": {"inputs": [str(i) for i in inputs], "output": out.dest,
                      "engine": spec.engine, "runtime": spec.runtime,
                      "batch_size": spec.batch_size, "workers": spec.workers,
                      "top_k": spec.top_k, "address": spec.address,
                      "limits": asdict(spec.limits)},
        "seconds": round(seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": library_versions(RECORDED_PACKAGES + ("pyarrow",)),
    }

