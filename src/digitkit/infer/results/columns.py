"""Result rows as columns: the one Parquet schema of both engines, for result files
(`digitkit.infer.results.parquet`) and shard directories (`digitkit.infer.storage.shards`).

    path          string
    label         int32 (the digit), null on error
    confidence    float32, null on error
    top_k_labels  list<int32>, empty on error
    top_k_probs   list<float32>, empty on error
    error         string, "" on success

A general classifier's rows (class names, not digits) have the same columns with `label`
string and `top_k_labels` list<string> (`schema(named=True)`): the two schemas, one rule.

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


def schema(named: bool = False):
    """The result schema: digit labels (int32), or `named` class names (string)."""
    import pyarrow as pa

    label = pa.string() if named else pa.int32()
    return pa.schema([("path", pa.string()), ("label", label),
                      ("confidence", pa.float32()), ("top_k_labels", pa.list_(label)),
                      ("top_k_probs", pa.list_(pa.float32())), ("error", pa.string())])


def is_result_schema(s) -> bool:
    """Whether a Parquet file's schema is one of ours (either label type)."""
    return s.equals(schema()) or s.equals(schema(named=True))


def table_of(paths: list, reasons: list[str], order: np.ndarray, top: np.ndarray,
             names: tuple[str, ...] | None = None):
    """The rows of `paths` as a Table; `order` / `top` hold the top-k class indices /
    probabilities of the good files (those with an empty reason), in order; `names`: the
    class names labels are written as (None: the digit)."""
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
    flat = np.ascontiguousarray(order, np.int32).ravel()
    if names is None:
        label_col, flat_labels = pa.array(labels, mask=bad), pa.array(flat)
    else:
        # Class names by index: one string array of the names, taken per row.
        name_arr = pa.array(list(names), pa.string())
        label_col = name_arr.take(pa.array(labels, mask=bad))
        flat_labels = name_arr.take(pa.array(flat))
    top_labels = pa.ListArray.from_arrays(pa.array(offsets), flat_labels)
    top_probs = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(np.ascontiguousarray(top, np.float32).ravel()))
    columns = [pa.array([str(p) for p in paths], pa.string()),
               label_col, pa.array(conf, mask=bad), top_labels, top_probs,
               pa.array([str(r) for r in reasons], pa.string())]
    return pa.Table.from_arrays(columns, schema=schema(names is not None))


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
