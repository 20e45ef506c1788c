"""Batch inference: files in, one result row per file out, streamed in input order.

Rooms: `spec` (the one contract: `InferSpec`, `BatchEngine`, the registry `BATCH_ENGINES`),
`run` (`run_infer`: everything around an engine, the one driver loop), `summary` (the report
at the end); `engines/` (the batch engines: local processes, Ray), `pool/` (the local worker
pool: workers that may crash or hang without costing more than their file), `results/` (rows,
the result-format table, the result files: CSV / JSON Lines text, Parquet) and `storage/`
(shard directories, object stores, object-store inputs).
"""

from digitkit.infer.run import run_infer
from digitkit.infer.spec import (
    BATCH_ENGINES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_ENGINE,
    DEFAULT_TOP_K,
    BatchEngine,
    EncodedRows,
    InferSpec,
    get_engine,
)
from digitkit.infer.summary import InferSummary, format_summary, save_confusion

__all__ = ["BATCH_ENGINES", "DEFAULT_BATCH_SIZE", "DEFAULT_ENGINE", "DEFAULT_TOP_K",
           "BatchEngine", "EncodedRows", "InferSpec", "InferSummary", "format_summary",
           "get_engine", "run_infer", "save_confusion"]
