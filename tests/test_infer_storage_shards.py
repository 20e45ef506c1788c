"""digitkit.infer.storage.shards: the plan of a shard directory (deterministic, content-
addressed names) and a shard's bytes read back as its counts, in every result format. The
directories themselves, written by the Ray actors, are tests/test_infer_engines_ray_shards.py."""

from __future__ import annotations

import numpy as np
import pytest

from digitkit.errors import UsageError
from digitkit.infer.results.formats import RESULT_FORMATS, encode_predictions
from digitkit.infer.storage.shards import (
    SHARD_RE,
    ShardOutput,
    is_shard_output,
    plan_shards,
    shard_bytes,
    shard_counts,
)

pytest.importorskip("pyarrow", reason="shard directories need pyarrow (the ray or parquet extra)")


def test_a_trailing_slash_names_a_shard_directory():
    assert is_shard_output("out/") and is_shard_output("s3://bucket/prefix/")
    assert is_shard_output(ShardOutput("out"))
    assert not is_shard_output("out.csv") and not is_shard_output(None)
    with pytest.raises(UsageError, match="--shard-size must be at least 1"):
        ShardOutput("out/", 0)


def test_plan_names_are_deterministic_and_content_addressed():
    files = [f"/d/{i}.png" for i in range(10)]
    a = plan_shards(files, 4, "sha\0" + "3", "parquet", set())
    assert [s.index for s in a] == [0, 1, 2]
    assert [s.paths.split(b"\0") for s in a][2] == [b"/d/8.png", b"/d/9.png"]
    assert [s.name for s in a] == [s.name for s in plan_shards(files, 4, "sha\0" + "3",
                                                                "parquet", set())]
    assert all(SHARD_RE.match(s.name) for s in a)
    other_model = plan_shards(files, 4, "sha2\0" + "3", "parquet", set())
    assert not {s.name for s in a} & {s.name for s in other_model}
    moved = plan_shards(files[1:], 4, "sha\0" + "3", "parquet", set())
    assert a[0].name != moved[0].name
    done = plan_shards(files, 4, "sha\0" + "3", "parquet", {a[1].name})
    assert [s.done for s in done] == [False, True, False]


@pytest.mark.parametrize("fmt", list(RESULT_FORMATS))
def test_shard_bytes_read_back_as_counts(fmt):
    probs = np.eye(10, dtype=np.float32)[[3, 5]]
    rows = encode_predictions(["/d/3/a.png", "/d/bad.png", "/d/5/b.png"],
                              ["", "empty file", ""], probs, 3, fmt)
    back = shard_counts(shard_bytes(rows, fmt), fmt)
    assert back.count == 3 and back.errors == [("/d/bad.png", "empty file")]
    assert back.confusion[3, 3] == back.confusion[5, 5] == 1 and back.confusion.sum() == 2
