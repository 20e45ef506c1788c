"""What a result file was made with, recorded with it, and the one rule for when `--resume`
may add rows to it: only rows made the same way.

The record (`Record`): the model's sha256 (of the copy that runs: the MODEL file, a
SavedModel directory's tree, or an export directory's copy for the runtime), the input
convention it runs under (digitkit's contract, or the adapter's convention, resolved or
declared), `top_k`, `max_file_size` (it decides which files become error rows), the digitkit
version, and the runtime and precision that served it (`infer --runtime --precision`). Every
one of these changes rows, so a resume that differs in any is refused in one line naming the
difference (exit 1). Not compared: the engine, batch size, workers (the same rows: tests
hold both engines to it) and `--file-timeout` (a time limit depends on the machine's load,
not on the file; resuming with a longer one after hangs is what it is for).

Where it lives:
- Parquet: the file's key-value metadata (`digitkit.provenance`), which every reader ignores.
- CSV and JSON Lines: a sidecar `FILE.meta.json` beside the file, written atomically just
  before the file is created. A comment line or a first JSON line in the file itself would
  change what Python's csv module, pandas and DuckDB read (a header that is a comment, a row
  of nulls), and those files are for them.
- A shard directory: `_provenance.json` in it (`digitkit.infer.storage.shards`), written before any
  shard; readers skip names starting with `_`.

A result file with rows and no record (written before digitkit recorded one, or its
sidecar lost) is refused: nothing says what made its rows; `--force` starts it over.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from digitkit.errors import DataError

#: Key of the record in a Parquet file's key-value metadata.
PARQUET_KEY = b"digitkit.provenance"
#: Suffix of a text result file's sidecar.
SIDECAR_SUFFIX = ".meta.json"
#: A record is a few hundred bytes; anything larger is not ours.
_MAX_RECORD = 1 << 16
#: What each compared field is called in a refusal.
_NAMES = {"model_sha256": "model sha256", "input_convention": "input convention",
          "top_k": "top-k", "max_file_size": "--max-file-size", "digitkit": "digitkit",
          "runtime": "runtime", "precision": "precision"}


@dataclass(frozen=True)
class Record:
    """Everything that changes a result row (see the module docstring)."""

    model_sha256: str
    input_convention: str
    top_k: int
    max_file_size: int
    digitkit: str
    runtime: str  # the runtime table's row that served it (predictors.serving)
    precision: str
    #: how `--runtime auto` chose that row: its evidence (predictors.choice); not compared
    choice: dict | None = None

    def to_json(self) -> dict:
        return {"provenance": 1, **asdict(self)}

    @classmethod
    def from_json(cls, d) -> Record | None:
        if not isinstance(d, dict):
            return None
        try:
            return cls(**{k: d[k] for k in _NAMES}, choice=d.get("choice"))
        except (KeyError, TypeError):
            return None

    def difference(self, other: Record) -> str | None:
        """How `other` (this run) differs from this record (the file's), or None."""
        diffs = []
        for key, name in _NAMES.items():
            mine, theirs = getattr(self, key), getattr(other, key)
            if mine != theirs:
                if key == "model_sha256":
                    mine, theirs = mine[:12], theirs[:12]
                diffs.append(f"{name} {mine}, this run {theirs}")
        return "; ".join(diffs) or None


def record_for(model: str | os.PathLike, convention, top_k: int, max_file_size: int,
               runtime: str, precision: str, choice: dict | None = None,
               sha256: str | None = None) -> Record:
    """The record of a run of `model` (the copy of MODEL that runs: the file, or an export
    directory's copy for the runtime) under `convention` (an InputConvention, None: digitkit's
    contract) on `runtime` at `precision`; `sha256`: the copy's, when the caller hashed it
    already; `choice`: how `--runtime auto` chose the runtime (its evidence)."""
    from digitkit import __version__
    from digitkit.artifacts import sha256_file, sha256_tree

    sha = sha256 or (sha256_tree(model) if os.path.isdir(model) else sha256_file(model))
    conv = "digitkit's contract" if convention is None else convention.describe(full=True)
    return Record(sha, conv, top_k, max_file_size, __version__, runtime, precision, choice)


def sidecar(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def read_record(path: str | os.PathLike, fmt) -> Record | None:
    """The record of an existing result file of format `fmt` (a `ResultFormat`), or None
    (none, or unreadable: the scan that follows says what is wrong with an unreadable
    file)."""
    from digitkit.inputs import open_regular

    p = Path(path)
    try:
        if fmt.keeps_record:  # Parquet, the one format that does
            import pyarrow.parquet as pq

            with open_regular(p) as f:
                meta = pq.ParquetFile(f).schema_arrow.metadata or {}
            raw = meta.get(PARQUET_KEY)
        else:
            side = sidecar(p)
            if not side.exists():
                return None
            with open_regular(side, _MAX_RECORD) as f:
                raw = f.read()
        return None if raw is None else Record.from_json(json.loads(raw))
    except DataError:
        raise
    except Exception:  # not Parquet, not JSON: the scan refuses the file with its reason
        return None


def check_resume(path: str | os.PathLike, found: Record | None, wanted: Record,
                 has_rows: bool) -> None:
    """Refuse to add `wanted`'s rows to a file recorded as `found` (None: no record)."""
    if found is None:
        if has_rows:
            raise DataError(path, "cannot resume: no record of the model and options its rows "
                                  f"were made with (made before digitkit recorded them, or "
                                  f"{sidecar(path).name} is gone); --force starts it over")
        return
    diff = found.difference(wanted)
    if diff:
        raise DataError(path, f"cannot resume: made with {diff} (rerun with the same model "
                              "and options, or --force to start it over)")


def write_sidecar(path: str | os.PathLike, record: Record) -> None:
    """Write a text result file's record beside it, atomically (before the file exists)."""
    from digitkit.artifacts import write_json_atomic

    write_json_atomic(sidecar(path), record.to_json())


def parquet_metadata(record: Record) -> dict[bytes, bytes]:
    return {PARQUET_KEY: json.dumps(record.to_json()).encode()}


def open_recorded(fmt, out: Path | None, record: Record, *, append_at=None, force=False):
    """`fmt.open(out, ...)` (a `ResultFormat`) with `record` kept where the format keeps it:
    Parquet's metadata, or the sidecar written just before a text file (never a file without
    its record). Stdout keeps none."""
    if out is None:
        return fmt.open(out, append_at=append_at, force=force)
    if fmt.keeps_record:
        return fmt.open(out, append_at=append_at, force=force,
                        metadata=parquet_metadata(record))
    write_sidecar(out, record)
    return fmt.open(out, append_at=append_at, force=force)


# -- shard directories ----------------------------------------------------------------------

#: A shard directory's record, written before its first shard.
SHARD_RECORD = "_provenance.json"


def check_shard_dir(dest, names: set[str], shard_names: set[str], record: Record,
                    resume: bool) -> None:
    """Refuse to resume the shard directory `dest` (a `stores.Destination` holding `names`)
    with shards made another way (its record differs) or of another plan (shard files
    this run's plan does not name: other inputs). `shard_names`: the names in the directory
    that are shards. Nothing is deleted: a refusal leaves the directory as it was."""
    if not resume:
        return
    found = None
    if SHARD_RECORD in names:
        try:
            found = Record.from_json(json.loads(dest.read(SHARD_RECORD)[:_MAX_RECORD]))
        except ValueError:
            found = None
    if found is None and shard_names:
        raise DataError(dest.dest, "cannot resume: no record of the model and options its "
                                   f"shards were made with ({SHARD_RECORD}); --force starts "
                                   "it over")
    if found is not None:
        check_resume(dest.dest, found, record, has_rows=True)


def check_shard_plan(dest: str, stray: set[str]) -> None:
    """Refuse a resume whose plan does not name every shard already there (other inputs, or
    a file added or removed since): those shards would give rows twice or of files no
    longer asked for, and they are not this run's to delete."""
    if stray:
        raise DataError(dest, f"cannot resume: {len(stray)} shard file(s) here are not of this "
                              f"run's plan (first: {min(stray)}): the inputs differ from the "
                              "run that wrote them; give the same PATHs, or --force to start "
                              "it over")


def write_shard_record(dest, record: Record) -> None:
    dest.write(SHARD_RECORD, (json.dumps(record.to_json(), indent=1) + "\n").encode())
