"""Result rows as columns: the one Parquet schema of both engines, for result files
(`digitkit.infer.results.parquet`) and shard directories (`digitkit.infer.storage.shards`).

    path          string
    label         int32, null on error
    confidence    float32, null on error
    top_k_labels  list<int32>, empty on error
    top_k_probs   list<float32>, empty on error
    error         string, "" on success

The columns are the CSV / JSON Lines ones with their natural types, so pandas, DuckDB, Spark
and pyarrow read the files directly. Probabilities are the model's own float32 values: the
text formats round them to 6 decimals, a binary format has no reason to.

A leaf module (numpy and, inside functions, pyarrow): `formats.encode_predictions` turns a
chunk into a table here, so the local workers and the Ray actors build the same columns.
"""

from __future__ import annotations

import numpy as np

from digitkit.errors import missing_extra

#: pyarrow (~170 MB) is not in the base install: only Parquet output and the Ray engine
#: (whose extra brings it) need it.
PARQUET_EXTRA = "parquet"


def require_pyarrow() -> None:
    """Fail in one line, before any work, when Parquet output is asked for without pyarrow."""
    import importlib.util

    try:
        found = importlib.util.find_spec("pyarrow") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise missing_extra("Parquet output", PARQUET_EXTRA)


def schema():
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("label", pa.int32()),
                      ("confidence", pa.float32()), ("top_k_labels", pa.list_(pa.int32())),
                      ("top_k_probs", pa.list_(pa.float32())), ("error", pa.string())])


def table_of(paths: list, reasons: list[str], order: np.ndarray, top: np.ndarray):
    """The rows of `paths` as a Table; `order` / `top` hold the top-k labels / probabilities
    of the good files (those with an empty reason), in order."""
    import pyarrow as pa

    n = len(paths)
    bad = np.fromiter((bool(r) for r in reasons), dtype=bool, count=n)
    k = order.shape[1] if order.ndim == 2 else 0
    labels = np.zeros(n, np.int32)
    conf = np.zeros(n, np.float32)
    if len(order):
        labels[~bad] = order[:, 0]
        conf[~bad] = top[:, 0]
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.where(bad, 0, k), out=offsets[1:])
    top_labels = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(np.ascontiguousarray(order, np.int32).ravel()))
    top_probs = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(np.ascontiguousarray(top, np.float32).ravel()))
    columns = [pa.array([str(p) for p in paths], pa.string()),
               pa.array(labels, mask=bad), pa.array(conf, mask=bad), top_labels, top_probs,
               pa.array([str(r) for r in reasons], pa.string())]
    return pa.Table.from_arrays(columns, schema=schema())


def table_bytes(table) -> bytes:
    """One Parquet file (one row group) holding `table`: a shard's bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def read_columns(data: bytes, columns: list[str]) -> dict[str, list]:
    """`columns` of a Parquet file's bytes, as Python lists."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(data), columns=columns)
    return {c: table.column(c).to_pylist() for c in columns}
