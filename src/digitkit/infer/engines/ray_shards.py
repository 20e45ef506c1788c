"""Shard directories on Ray: the actors write the rows, the driver only plans and counts.

The dataset has one record per shard (its number, file name and NUL-joined paths), one block
each. `map_batches` hands each record to an actor of the pool: the actor decodes and
classifies the shard's files in batches of `batch_size` with the Ray engine's own actor code
(`ray_actors.classifier_class`: same decoder, same error reasons, same predictor), encodes
the rows as the local engine does (`formats.encode_predictions`), writes them as one file
(`stores.Destination.write`: whole or not at all) and returns only its `ShardDone`. The
driver takes those in completion order (no order to keep: a slow shard holds up nothing).

Why it cannot hang or double-count on a small or shrinking cluster:
- No read stage: the records are built by the driver (`from_items`), so no Ray Data read
  task waits for a CPU that the actors hold (the known hang when an actor pool takes every
  CPU); the actors are the only work that needs a CPU.
- At most `_IN_FLIGHT` shards queued per actor, so the shards left at the end spread over
  the pool instead of waiting behind one actor.
- A node lost mid-run: Ray restarts its actors on the nodes left (Ray Data's default
  max_restarts=-1) and retries their shards (max_task_retries=-1). A retried shard writes the
  same file name with the same rows, so nothing is counted or stored twice; the driver also
  counts a shard once whatever reports it. A restarted actor needs a free CPU: with none, it
  starts once the surviving actors have done the other shards and Ray Data releases them
  (tests/test_infer_engines_ray_cluster.py kills one of two 1-CPU nodes: the run completes).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from digitkit.infer.engines.ray_actors import (
    ModelPayload,
    actor_count,
    classifier_class,
    connect,
    data_context,
    encode_classified,
    model_payload,
)
from digitkit.infer.results.rows import EncodedRows
from digitkit.infer.spec import InferSpec, ShardDone, ShardJob
from digitkit.infer.storage.shards import shard_bytes, shard_counts
from digitkit.infer.storage.stores import Destination

#: Shards queued on one actor: one running and one waiting, so an actor never idles between
#: shards, and the last shards of a run go to whichever actor is free.
_IN_FLIGHT = 2
#: Tries to publish a shard: an object store drops a request now and then (a reset
#: connection, a 503 "slow down"); three tries with 0.5 s, 1 s between them ride that out
#: without hiding a store that is really gone (then the run stops: --resume finishes it).
_WRITE_TRIES = 3


@dataclass(frozen=True)
class _Task:
    """What every actor needs besides the model (pickled into the actor class)."""

    dest: str
    fmt: str
    top_k: int
    batch_size: int


def _shard_worker_class(model: ModelPayload, task: _Task, limits):
    class ShardWorker(classifier_class(model, limits)):
        def __init__(self):
            super().__init__()
            self._dest = Destination(task.dest)

        def __call__(self, batch: dict) -> dict:
            return {"done": np.array(
                [self._shard(int(k), str(name), bytes(joined), bool(done))
                 for k, name, joined, done in zip(batch["shard"], batch["name"],
                                                  batch["paths"], batch["done"], strict=True)],
                dtype=object)}

        def _shard(self, index: int, name: str, joined: bytes, done: bool) -> ShardDone:
            paths = joined.decode("utf-8", "surrogateescape").split("\0")
            counts = self._read_back(name, len(paths)) if done else None
            if counts is None:
                rows = self._classify(paths)
                self._publish(name, shard_bytes(rows, task.fmt))
            else:
                rows = counts
            return ShardDone(rows.count, rows.errors, rows.confusion, index=index,
                             resumed=counts is not None)

        def _classify(self, paths: list[str]) -> EncodedRows:
            reasons, probs = [], []
            for i in range(0, len(paths), task.batch_size):
                r, p = self.classify(paths[i:i + task.batch_size])
                reasons.extend(r)
                probs.append(p)
            return encode_classified(paths, reasons, np.concatenate(probs), task.top_k,
                                     task.fmt, model.names)

        def _publish(self, name: str, data: bytes) -> None:
            for attempt in range(_WRITE_TRIES):
                try:
                    return self._dest.write(name, data)
                except OSError:
                    if attempt == _WRITE_TRIES - 1:
                        raise
                    time.sleep(0.5 * 2 ** attempt)

        def _read_back(self, name: str, expected: int):
            """The counts of a shard written before (resume); None: redo it (gone, or not
            what this plan expects)."""
            try:
                counts = shard_counts(self._dest.read(name), task.fmt, model.names)
            except Exception:  # missing, unreadable, not ours: classify the files again
                return None
            return counts if counts.count == expected else None

    return ShardWorker


def write_shards(spec: InferSpec, job: ShardJob) -> Iterator[ShardDone]:
    """Have the actors write every shard of `job`; yield each one's `ShardDone` as it
    finishes."""
    model = model_payload(spec)
    items = [{"shard": s.index, "name": s.name, "paths": s.paths, "done": s.done}
             for s in job.shards]
    if not items:
        return
    task = _Task(job.dest, job.fmt, spec.top_k, spec.batch_size)
    # Completion order: the driver only adds counts up, and nothing waits behind a slow shard.
    with connect(spec.address, num_cpus=spec.workers) as ray, \
            data_context(ray, preserve_order=False):
        n_workers = actor_count(ray, spec.workers, len(items))
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        del items
        ds = ds.map_batches(
            _shard_worker_class(model, task, spec.limits),
            compute=ray.data.ActorPoolStrategy(size=n_workers,
                                               max_tasks_in_flight_per_actor=_IN_FLIGHT),
            batch_size=1, batch_format="numpy", num_cpus=1)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield from batch["done"]
