"""digitkit.infer.results.formats: the one result-format table. Every row keeps the same
contract (encode, write, scan back, shard bytes and back), so a new format is one row."""

from __future__ import annotations

import numpy as np
import pytest

from digitkit.errors import UsageError
from digitkit.infer.results.formats import (
    DEFAULT_FORMAT,
    RESULT_FORMATS,
    encode_predictions,
    format_for,
    join_encoded,
    result_format,
)

PATHS = ["/d/3/a.png", "/d/bad.png", "/d/5/b,c.png"]
REASONS = ["", "empty file", ""]
PROBS = np.eye(10, dtype=np.float32)[[3, 5]]


def test_format_for():
    assert format_for(None) == DEFAULT_FORMAT == "csv"
    assert format_for("x.csv") == format_for("x.txt") == "csv"
    assert format_for("x.JSONL") == format_for("x.ndjson") == "jsonl"
    assert format_for("r.parquet") == "parquet"
    for f in RESULT_FORMATS.values():
        assert format_for(f"out{f.suffix}") == f.name


def test_unknown_format_is_a_usage_error():
    with pytest.raises(UsageError) as e:
        result_format("xml")
    assert e.value.message == "unknown output format 'xml'"


@pytest.mark.parametrize("name", list(RESULT_FORMATS))
def test_every_format_round_trips_file_and_shard(name, tmp_path):
    fmt = result_format(name)
    fmt.require()
    enc = encode_predictions(PATHS, REASONS, PROBS, 3, name)
    assert enc.count == 3 and enc.errors == [("/d/bad.png", "empty file")]
    assert enc.confusion[3, 3] == enc.confusion[5, 5] == 1
    # A result file: written in two chunks (joined as a crash retry joins them), scanned back.
    out = tmp_path / f"r{fmt.suffix}"
    halves = [encode_predictions(PATHS[:1], REASONS[:1], PROBS[:1], 3, name),
              encode_predictions(PATHS[1:], REASONS[1:], PROBS[1:], 3, name)]
    joined = join_encoded(halves, name)
    assert (joined.count, joined.errors) == (enc.count, enc.errors)
    with fmt.open(out) as w:
        w.write(joined.data)
    rows = []
    end = fmt.scan(out, rows.append)
    assert [(r.path, r.label, r.error) for r in rows] == [
        ("/d/3/a.png", 3, ""), ("/d/bad.png", None, "empty file"), ("/d/5/b,c.png", 5, "")]
    assert end in (3, out.stat().st_size)  # Parquet counts rows, text formats bytes
    # A shard: its bytes read back as the same columns.
    paths, labels, errors = fmt.shard_rows(fmt.shard_bytes(enc.data))
    assert (paths, labels, errors) == (PATHS, [3, None, 5], REASONS)


def test_only_binary_formats_refuse_stdout():
    assert [f.name for f in RESULT_FORMATS.values() if f.stdout_refused] == ["parquet"]
