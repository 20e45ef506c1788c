"""digitkit.model.calls: how many images one call of a model over a set takes."""

from __future__ import annotations

import numpy as np

from digitkit.model.calls import MAX_CALL_VALUES, call_batch, in_calls


def test_digits_keep_their_calls_and_large_inputs_are_split():
    assert call_batch(np.zeros((10_000, 28, 28), np.float32)) == 1000
    assert call_batch(np.zeros((300, 224, 224, 3), np.float32)) == 32
    assert call_batch(np.zeros((2, 4096, 4096, 3), np.float32)) == 1  # never none
    assert MAX_CALL_VALUES == 32 * 224 * 224 * 3


def test_the_pieces_cover_the_set_in_order():
    x = np.arange(300 * 8 * 8 * 3, dtype=np.float32).reshape(300, 8, 8, 3)
    parts = list(in_calls(x, most=64))
    assert [len(p) for p in parts] == [64, 64, 64, 64, 44]
    assert np.array_equal(np.concatenate(parts), x)
