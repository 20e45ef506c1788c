"""A worker runs each runtime as `auto` times it: the predictor `infer`'s workers open
(`serving.open_in_worker`, what `_classify_worker` calls) and the one `auto`'s calibration opens
for a run with workers (`open_runtime(row, copy, *worker_regime(batch))`, what
`choice.calibrate` calls), and the one a Ray actor opens (`ray_actors.actor_predictor`), are
compared by what each runtime itself reports it runs with, on the
real runtimes. And OpenVINO, which pins the thread running a request to the first cores by
default, leaves it where the OS put it: every worker pinned to core 0 was why OpenVINO ran at
half its calibrated speed in infer's workers (BENCHMARKS.md, "OpenVINO in infer's workers")."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from digitkit.infer.spec import DEFAULT_BATCH_SIZE
from digitkit.predictors.runtimes import RUNTIMES, open_runtime
from digitkit.predictors.serving import (
    forkable,
    open_in_worker,
    serving_model,
    serving_runtimes,
    worker_regime,
)


def reported(predictor) -> dict:
    """The settings a loaded predictor runs with, as its runtime reports them."""
    predictor.load()
    if predictor.runtime == "onnxruntime":
        options = predictor.session.get_session_options()
        return {"intra_op_num_threads": options.intra_op_num_threads,
                "inter_op_num_threads": options.inter_op_num_threads,
                "execution_mode": str(options.execution_mode),
                "graph_optimization_level": str(options.graph_optimization_level),
                "allow_spinning": options.get_session_config_entry(
                    "session.intra_op.allow_spinning"),
                "providers": predictor.session.get_providers()}
    if predictor.runtime == "openvino":
        return {key: str(value) for key, value in predictor.properties().items()}
    # LiteRT's interpreter does not report its XNNPACK thread count: the one it was given.
    return {"num_threads": predictor.threads, "interpreter": predictor.runtime_name}


def _rows_here() -> list[str]:
    """The rows installed here that infer runs in its workers (TensorFlow stays in the main
    process: `forkable`)."""
    return [r.name for r in RUNTIMES.values()
            if r.group in serving_runtimes() and forkable(r.name, "")
            and r.unavailable() is None]


@pytest.mark.parametrize("name", _rows_here())
def test_a_worker_runs_each_runtime_as_auto_calibrates_it(export_dir, name):
    row = RUNTIMES[name]
    serving = serving_model(export_dir, row.group, row.precision)
    worker = open_in_worker(serving.path, serving.runtime, DEFAULT_BATCH_SIZE)
    calibrated = open_runtime(row.name, serving.path, *worker_regime(DEFAULT_BATCH_SIZE))
    assert type(worker) is type(calibrated)
    assert worker.model_path == calibrated.model_path
    settings = reported(worker)
    assert settings == reported(calibrated)
    # One core's share each: the workers fill the cores between them.
    if row.group == "onnxruntime":
        assert settings["intra_op_num_threads"] == 1 and settings["allow_spinning"] == "0"
    elif row.group == "openvino":
        assert settings["INFERENCE_NUM_THREADS"] == "1"
        assert settings["ENABLE_CPU_PINNING"] == "False"
    else:
        assert settings["num_threads"] == 1


@pytest.mark.parametrize("name", _rows_here())
def test_a_ray_actor_runs_each_runtime_as_a_local_worker_does(export_dir, name):
    # The actor's predictor is built without Ray (the actor class only ships it); the same
    # opener as a local worker, so the same settings, read back from the runtime itself.
    from digitkit.infer.engines.ray_actors import actor_predictor
    from digitkit.infer.spec import InferSpec

    row = RUNTIMES[name]
    actor = actor_predictor(InferSpec(model=export_dir, runtime=row.group,
                                      precision=row.precision))
    serving = serving_model(export_dir, row.group, row.precision)
    worker = open_in_worker(serving.path, serving.runtime, DEFAULT_BATCH_SIZE)
    assert type(actor) is type(worker) and actor.model_path == worker.model_path
    assert reported(actor) == reported(worker)


def _narrowed_during(run, calls: int) -> set[str]:
    """The affinities narrower than this process's own that the calling thread had while
    `run()` ran `calls` times, watched from another thread (OpenVINO releases the GIL)."""
    tid = threading.get_native_id()
    allowed = os.sched_getaffinity(0)
    seen: set[str] = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            with open(f"/proc/self/task/{tid}/status") as f:
                line = next(x for x in f if x.startswith("Cpus_allowed_list"))
            seen.add(line.split(":")[1].strip())
            done.wait(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(calls):
            run()
    finally:
        done.set()
        watcher.join()
    own = _cpu_list(allowed)
    return {s for s in seen if s != own}


def _cpu_list(cpus: set[int]) -> str:
    """`cpus` as /proc writes Cpus_allowed_list ("0-1", "0,2-3")."""
    parts, run = [], []
    for c in sorted(cpus):
        if run and c != run[-1] + 1:
            parts.append(run)
            run = []
        run.append(c)
    parts.append(run)
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in parts)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs two cores to show")
def test_openvino_leaves_the_calling_thread_unpinned(export_dir):
    ov = pytest.importorskip("openvino", reason="the 'runtimes' extra is not installed")
    x = np.random.default_rng(0).uniform(0, 255, (4096, 28, 28)).astype(np.float32)
    worker = open_in_worker(export_dir / "model.onnx", "openvino", DEFAULT_BATCH_SIZE).load()
    # The watch can see pinning: the same model compiled with OpenVINO's pinning on narrows
    # the calling thread to core 0 while a request runs.
    core = ov.Core()
    config = {**worker.config(), "ENABLE_CPU_PINNING": True}
    pinned = core.compile_model(core.read_model(str(export_dir / "model.onnx")), "CPU",
                                config).create_infer_request()
    assert _narrowed_during(lambda: pinned.infer({0: x}), 100)
    assert _narrowed_during(lambda: worker.predict(x), 100) == set()
