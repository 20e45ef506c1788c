"""digitkit.infer.spec: the one contract, its options' rules, and the registry."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from digitkit.errors import UsageError
from digitkit.infer.spec import (
    BATCH_ENGINES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_ENGINE,
    DEFAULT_TOP_K,
    BatchEngine,
    InferSpec,
    get_engine,
)


def test_spec_defaults_and_immutability():
    spec = InferSpec("m.onnx")
    assert (spec.batch_size, spec.top_k, spec.engine) == (DEFAULT_BATCH_SIZE, DEFAULT_TOP_K,
                                                          DEFAULT_ENGINE)
    assert spec.workers is None and spec.fmt is None and spec.address is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.top_k = 5


@pytest.mark.parametrize("options, message", [
    ({"engine": "spark"}, "unknown engine 'spark'; choose from local, ray"),
    ({"batch_size": 0}, "--batch-size must be at least 1, got 0"),
    ({"top_k": 11}, "--top-k must be between 1 and 10, got 11"),
    ({"top_k": 0}, "--top-k must be between 1 and 10, got 0"),
    ({"workers": -1}, "--workers must be 0 (decode in-process) or more, got -1"),
    ({"fmt": "xml"}, "unknown output format 'xml'"),
])
def test_spec_refuses_what_no_engine_can_run(options, message):
    with pytest.raises(UsageError) as e:
        InferSpec("m.onnx", **options)
    assert e.value.message == message


def test_registry_has_every_engine_with_one_signature():
    assert tuple(BATCH_ENGINES) == ("local", "ray")
    with pytest.raises(UsageError, match="unknown engine"):
        get_engine("spark")
    local, ray = get_engine("local"), get_engine("ray")  # the Ray engine without Ray itself
    assert isinstance(local, BatchEngine) and isinstance(ray, BatchEngine)
    assert (local.name, ray.name) == tuple(BATCH_ENGINES)
    assert (local.writes_shards, ray.writes_shards) == (False, True)
    for part in ("check", "find", "run"):
        assert inspect.signature(getattr(local, part)).parameters.keys() == \
            inspect.signature(getattr(ray, part)).parameters.keys(), part
    assert inspect.isgeneratorfunction(local.run) and inspect.isgeneratorfunction(ray.run)
