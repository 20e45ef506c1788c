#!/usr/bin/env python
"""Each runtime as `auto` calibrates it (one process alone) against the same runtime in
`infer`'s workers (one process per core, all at once), model only, interleaved.

    python benchmarks/bench_worker_runtimes.py EXPORT_DIR [--runtimes onnxruntime,openvino,litert]
        [--batch-size 256] [--calls 40] [--rounds 3] [--workers N] [--pinned] [--json OUT]

EXPORT_DIR: a `digitkit export` directory. For every runtime, each round runs:
- calibration: one fresh process opens the row as `auto` does for a run with workers
  (`open_runtime(row, copy, *worker_regime(batch))`) and times `--calls` batches with
  `timing.time_batch`, as `choice.calibrate` does;
- workers: `--workers` fresh processes (default: one per usable core, as `infer`) each open it
  as a worker does (`serving.open_in_worker`), warm up, wait for a common start time, and run
  `--calls` batches each at once; images/s per worker = calls x batch / that worker's wall.
The ratio workers/calibration is what `auto` leaves out of its ranking when it is not 1 (cores
busy with other processes lower both alike; a runtime whose workers fight over one core lowers
only its own). "cores used" is the workers' CPU seconds together over the wall of the phase
they run at once: workers that share one core cannot exceed 1.0, whatever the outside load.
"cores" names, for each worker, the core its calling thread ran on most and that core's share
of the samples (every 5 ms, from a watcher thread): workers a runtime pins share one core
("0:1.00 0:1.00"), workers the OS places do not have to.
`--pinned` adds "openvino-pinned": OpenVINO with its default CPU pinning, as digitkit opened it
before the pinning was turned off. The inputs are MNIST-sized random pixels
(the speed of these models does not depend on the values). CPU seconds are printed beside wall.
Runs alternate runtimes within a round, so outside load falls on every runtime alike; the best
round counts. The command line and `uptime` are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def child(spec: dict) -> dict:
    """One process: open the runtime as asked, run, report."""
    import numpy as np

    from digitkit.predictors.serving import open_in_worker, serving_model, worker_regime
    from digitkit.predictors.timing import time_batch

    batch, calls = spec["batch"], spec["calls"]
    name = spec["runtime"]
    row = name.removesuffix("-pinned")
    serving = serving_model(spec["export"], row)
    x = np.random.default_rng(0).uniform(0, 255, (batch * 4, 28, 28)).astype(np.float32)
    if name.endswith("-pinned"):
        from digitkit.predictors.openvino import OpenVinoPredictor

        class Pinned(OpenVinoPredictor):  # OpenVINO's default, as digitkit ran it before
            def config(self):
                return {**super().config(), "ENABLE_CPU_PINNING": True}

        predictor = Pinned(serving.path, worker_regime(batch)[0])
    elif spec["mode"] == "calibration":
        from digitkit.predictors.runtimes import open_runtime

        predictor = open_runtime(row, serving.path, *worker_regime(batch))
    else:
        predictor = open_in_worker(serving.path, serving.runtime, batch)
    predictor.load()
    if spec["mode"] == "calibration":
        c0 = time.process_time()
        t = time_batch(predictor.predict, x, batch, warmup=2, duration=None, iterations=calls)
        return {"images_per_s": t["images_per_s"], "wall": t["seconds"],
                "cpu": time.process_time() - c0}
    cycle = [x[i * batch:(i + 1) * batch] for i in range(4)]
    for b in cycle[:2]:
        predictor.predict(b)
    while time.time() < spec["start"]:
        time.sleep(0.001)
    where = _Placement()
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(calls):
        predictor.predict(cycle[i % 4])
    wall = time.perf_counter() - w0
    cpu = time.process_time() - c0
    return {"images_per_s": calls * batch / wall, "wall": wall, "cpu": cpu,
            "busiest_core": where.stop()}


class _Placement:
    """Which core this (the calling) thread runs on, sampled by a watcher thread (the runtimes
    release the GIL while they compute); `stop()` -> (the busiest core, its share of the
    samples)."""

    def __init__(self):
        import threading

        self.path = f"/proc/self/task/{threading.get_native_id()}/stat"
        self.counts: dict[int, int] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        while not self.done.is_set():
            with open(self.path) as f:
                cpu = int(f.read().rsplit(")", 1)[1].split()[36])  # field 39: last CPU
            self.counts[cpu] = self.counts.get(cpu, 0) + 1
            self.done.wait(0.005)

    def stop(self) -> tuple[int, float]:
        self.done.set()
        self.thread.join()
        core = max(self.counts, key=self.counts.get)
        return core, self.counts[core] / sum(self.counts.values())


def spawn(spec: dict) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"a child failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", type=Path)
    ap.add_argument("--runtimes", default="onnxruntime,openvino,litert")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--pinned", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    print("$", shlex.join([sys.executable, *sys.argv]))
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    names = args.runtimes.split(",") + (["openvino-pinned"] if args.pinned else [])
    base = {"export": str(args.export), "batch": args.batch_size, "calls": args.calls}
    figures = {n: {"calibration": [], "workers": [], "worker_cpu_per_image_us": [],
                   "cores_used": [], "busiest_cores": []} for n in names}
    for r in range(args.rounds):
        for n in names:
            cal = result(spawn({**base, "runtime": n, "mode": "calibration"}))
            start = time.time() + 3.0  # past every worker's import, load and warm-up
            procs = [spawn({**base, "runtime": n, "mode": "workers", "start": start})
                     for _ in range(args.workers)]
            ws = [result(p) for p in procs]
            per_worker = min(w["images_per_s"] for w in ws)
            cpu = sum(w["cpu"] for w in ws) / (len(ws) * args.calls * args.batch_size) * 1e6
            cores = sum(w["cpu"] for w in ws) / max(w["wall"] for w in ws)
            figures[n]["calibration"].append(cal["images_per_s"])
            figures[n]["workers"].append(per_worker)
            figures[n]["worker_cpu_per_image_us"].append(cpu)
            figures[n]["cores_used"].append(cores)
            where = " ".join(f"{c}:{share:.2f}" for c, share in
                             (w["busiest_core"] for w in ws))
            figures[n]["busiest_cores"].append(where)
            print(f"round {r + 1} {n:16s} calibration {cal['images_per_s']:9,.0f}/s  "
                  f"{args.workers} workers {per_worker:9,.0f}/s each (slowest), "
                  f"CPU {cpu:6.1f} us/image, cores used {cores:.2f}, cores {where}; "
                  f"ratio {per_worker / cal['images_per_s']:.2f}",
                  flush=True)
    print(f"\nbest of {args.rounds} rounds, batch {args.batch_size}, {args.workers} workers:")
    print(f"{'runtime':16s} {'calibration/s':>14s} {'per worker/s':>13s} {'ratio':>6s} "
          f"{'worker CPU us/img':>18s} {'cores used':>11s}  cores (each round)")
    for n, f in figures.items():
        cal, wrk = max(f["calibration"]), max(f["workers"])
        f.update(best_calibration=cal, best_workers=wrk, ratio=wrk / cal)
        print(f"{n:16s} {cal:14,.0f} {wrk:13,.0f} {wrk / cal:6.2f} "
              f"{min(f['worker_cpu_per_image_us']):18.1f} {max(f['cores_used']):11.2f}  "
              f"{' | '.join(f['busiest_cores'])}")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if args.json:
        args.json.write_text(json.dumps({"command": shlex.join(sys.argv), **vars(args) | {
            "export": str(args.export), "json": str(args.json)}, "figures": figures},
            indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
