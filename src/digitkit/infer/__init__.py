"""Batch inference: files in, one result row per file out, streamed in input order.

Rooms: `spec` (the one contract: `InferSpec`, `Engine`, `EncodedRows`, the registry),
`rows` (rows and their CSV / JSON Lines text), `output` (the result file, resume), `local`
and `ray_engine` (the two engines, imported only when a run asks for them), `run`
(`run_infer`: everything around an engine) and `summary` (the report at the end).
Parquet: `columns` (the one schema) and `parquet` (a result file in row groups). Shard
directories written by the workers: `shards` (plan, names, manifest), `stores` (the file
system or object store, files published whole), `ray_shards` (the Ray actors that write them).
"""

from digitkit.infer.run import run_infer
from digitkit.infer.spec import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_ENGINE,
    DEFAULT_TOP_K,
    ENGINES,
    EncodedRows,
    Engine,
    InferSpec,
    get_engine,
)
from digitkit.infer.summary import InferSummary, format_summary, save_confusion

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_ENGINE", "DEFAULT_TOP_K", "ENGINES", "EncodedRows",
           "Engine", "InferSpec", "InferSummary", "format_summary", "get_engine", "run_infer",
           "save_confusion"]
