#!/usr/bin/env python
"""Reproduce BENCHMARKS.md's "Batch inference on Ray Data" figures (issues: ray, 12).

    python benchmarks/bench_ray.py [--model M.onnx] [--images DIR] [--copies 10]
                                   [--throughput-copies 5] [--workers 1,2] [--repeat 2]
                                   [--only driver|throughput]

Files: --copies copies of the 10,000 MNIST test PNGs in a temp dir (default 10: 100,000
files). Every measurement runs in a fresh process, on a local Ray instance it starts.

1. Driver cost (`--only driver`, 2 workers): the driver process's own CPU time (`time.process_time`:
   all its threads, Ray's included) for 10,000 files (one copy) and for all the copies,
   with the rows written by the workers to a shard directory (`-o DIR/`), and, for
   comparison, with every row streamed back to the driver and written to one file. The
   per-file driver cost is the difference divided by the extra files; listing and shard
   planning are timed apart, and what is left is Ray (scheduling, and its threads' work per
   second of run, which is no per-file cost at all).
2. Throughput (`--only throughput`), on --throughput-copies copies: the local engine as a
   user runs it (`digitkit infer ... -o local.parquet`), and the Ray engine writing Parquet
   shards with 1 and 2 workers, start-up apart (see `throughput_child`).
Best of --repeat (interleaved): the machine is shared, the best run the least disturbed.

Model: --model, else benchmarks/work/seed-mlp/model.onnx (made by bench_runtimes.py), else a
TensorFlow-free linear ONNX classifier fitted here (decoding dominates either way).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "mnist-png" / "test"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist"


def sh(argv: list[str], **kw) -> subprocess.CompletedProcess:
    print("$ " + " ".join(shlex.quote(str(a)) for a in argv), flush=True)
    return subprocess.run([str(a) for a in argv], check=False, **kw)


def default_model(work: Path) -> Path:
    mlp = HERE / "work" / "seed-mlp" / "model.onnx"
    if mlp.is_file():
        return mlp
    sys.path.insert(0, str(REPO / "tests"))
    from _onnx_model import build_linear_model

    return build_linear_model(DEFAULT_DATA, work)[0]


# -- children: one measurement per fresh process --------------------------------------------


def _quiet(msg: str) -> None:
    pass


def driver_child(model: str, copies: list[str], work: str, workers: int) -> dict:
    """Driver CPU and wall time for 1 copy and for all copies, shards vs rows to the driver."""
    from digitkit.infer import InferSpec, run_infer
    from digitkit.infer.engines.ray_actors import connect
    from digitkit.infer.storage.shards import DEFAULT_SHARD_SIZE, ShardOutput, plan_shards
    from digitkit.infer.storage.uri_inputs import find_inputs

    spec = InferSpec(model, engine="ray", workers=workers)
    res = {}
    with connect(None, num_cpus=workers):
        # Warm-up: the page cache and Ray's worker pool, so the first measured run pays no more.
        run_infer(spec, [copies[0] + "/0"], ShardOutput(f"{work}/warm"), force=True,
                  warn=_quiet)
        for label, inputs in (("1x", copies[:1]), (f"{len(copies)}x", copies)):
            c = time.process_time()
            files = list(find_inputs(inputs))
            listing = time.process_time() - c
            c = time.process_time()
            plan_shards(files, DEFAULT_SHARD_SIZE, "0" * 64 + "\0" + "3", "parquet", set())
            planning = time.process_time() - c
            for mode, out in (("shards", ShardOutput(f"{work}/{label}/")),
                              ("rows", f"{work}/{label}.csv")):
                c, t = time.process_time(), time.perf_counter()
                s = run_infer(spec, inputs, out, force=True, warn=_quiet)
                res[f"{mode}_{label}"] = {"files": s.total, "cpu_s": time.process_time() - c,
                                          "wall_s": time.perf_counter() - t}
            res[f"listing_{label}"] = listing
            res[f"planning_{label}"] = planning
            shutil.rmtree(f"{work}/{label}")
    return res


def throughput_child(model: str, copies: list[str], work: str, workers: int) -> dict:
    """Ray Data computes ahead of the consumer, so "time after the first result" is no steady
    rate. Three runs on one Ray instance, each with its own actor pool: a small one (one
    shard per worker) on a cold instance, the same again (Ray's worker processes now warm),
    and the full one. Full minus the second small one is (N - n_small) files of pure work:
    the steady rate. The first small run minus its work is the cold start-up."""
    t0 = time.perf_counter()
    from digitkit.infer import InferSpec, run_infer
    from digitkit.infer.engines.ray_actors import connect
    from digitkit.infer.storage.shards import ShardOutput
    from digitkit.infer.storage.uri_inputs import find_inputs

    spec = InferSpec(model, engine="ray", workers=workers)
    files = list(find_inputs(copies))
    size = 2048
    small = [copies[0] + "/0", copies[0] + "/1"]  # ~2,100 files: one shard per worker
    n_small = sum(1 for _ in find_inputs(small))
    t_import = time.perf_counter()

    def timed(inputs, name, shard_size) -> float:
        t = time.perf_counter()
        s = run_infer(spec, inputs, ShardOutput(f"{work}/{name}/", shard_size), warn=_quiet)
        assert s.total == (len(files) if inputs is copies else n_small)
        return time.perf_counter() - t

    with connect(None, num_cpus=workers):
        t_init = time.perf_counter()
        # Small runs: one shard per worker.
        t_cold = timed(small, "cold", -(-n_small // workers))
        t_small = timed(small, "warm", -(-n_small // workers))
        t_full = timed(copies, "full", size)
    steady = (len(files) - n_small) / max(t_full - t_small, 1e-9)
    return {"workers": workers, "files": len(files), "import_and_list_s": t_import - t0,
            "ray_init_s": t_init - t_import, "small_cold_s": t_cold, "small_warm_s": t_small,
            "actor_startup_s": max(0.0, t_cold - n_small / steady), "full_run_s": t_full,
            "steady_images_per_s": steady,
            "run_images_per_s": len(files) / (t_init - t_import + t_cold - t_small + t_full)}


CHILDREN = {"driver": driver_child, "throughput": throughput_child}


def run_child(kind: str, model: str, copies: list[str], work: str, workers: int) -> dict:
    argv = [sys.executable, __file__, "--child", kind, "--model", model, "--work", work,
            "--workers", str(workers), "--images", ",".join(copies)]
    t = time.perf_counter()
    proc = sh(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{kind} run failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_wall_s"] = time.perf_counter() - t
    print(json.dumps(res), flush=True)  # the raw figures, kept even if a later run fails
    return res


def run_local(model: str, copies: list[str], out: str) -> dict:
    argv = [sys.executable, "-m", "digitkit", "infer", model, *copies, "-o", out, "--force"]
    t = time.perf_counter()
    proc = sh(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode not in (0, 3):
        sys.exit(f"local run failed:\n{proc.stderr[-3000:]}")
    m = re.search(r"([\d,]+) classified in ([\d.]+) s \(([\d,]+) images/s\)", proc.stdout)
    n = int(m.group(1).replace(",", ""))
    res = {"files": n, "process_wall_s": wall, "run_images_per_s": n / float(m.group(2))}
    print(json.dumps(res), flush=True)
    return res


# -- reports --------------------------------------------------------------------------------


def report_driver(runs: list[dict], n_copies: int) -> None:
    big = f"{n_copies}x"
    best = min(runs, key=lambda r: r[f"shards_{big}"]["cpu_s"])
    small_n, big_n = best["shards_1x"]["files"], best[f"shards_{big}"]["files"]
    print(f"\nDriver process CPU (best of {len(runs)}), 2 workers:\n")
    print("| output | files | driver CPU s | wall s | driver CPU per file, marginal |")
    print("|---|---:|---:|---:|---:|")
    for mode in ("shards", "rows"):
        a, b = best[f"{mode}_1x"], best[f"{mode}_{big}"]
        per = (b["cpu_s"] - a["cpu_s"]) / (big_n - small_n) * 1e6
        name = "shard directory (workers write)" if mode == "shards" else \
            "one file (rows through the driver)"
        print(f"| {name} | {small_n:,} | {a['cpu_s']:.2f} | {a['wall_s']:.1f} | |")
        print(f"| {name} | {big_n:,} | {b['cpu_s']:.2f} | {b['wall_s']:.1f} | "
              f"{per:.1f} us |")
    lst = (best[f"listing_{big}"] - best["listing_1x"]) / (big_n - small_n) * 1e6
    pln = (best[f"planning_{big}"] - best["planning_1x"]) / (big_n - small_n) * 1e6
    a, b = best["shards_1x"], best[f"shards_{big}"]
    rest_cpu = b["cpu_s"] - best[f"listing_{big}"] - best[f"planning_{big}"]
    print(f"\nof which listing {lst:.2f} us/file ({best[f'listing_{big}']:.2f} s for {big_n:,}),"
          f" shard planning {pln:.2f} us/file; the rest, {rest_cpu:.2f} s, is Ray: "
          f"{rest_cpu / b['wall_s']:.3f} CPU-s per second of run "
          f"({(a['cpu_s'] - best['listing_1x'] - best['planning_1x']) / a['wall_s']:.3f} "
          "for the small run)")


def report_throughput(local: list[dict], ray: dict[int, list[dict]]) -> None:
    best_local = max(local, key=lambda r: r["run_images_per_s"])
    best = {w: max(rs, key=lambda r: r["steady_images_per_s"]) for w, rs in ray.items()}
    print(f"\nThroughput, {best_local['files']:,} files (best of {len(local)}):\n")
    print("| engine | process wall s | run images/s | Ray init s | actor start s "
          "| steady images/s |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| local (`digitkit infer -o local.parquet`, {os.cpu_count()} processes) | "
          f"{best_local['process_wall_s']:.1f} | {best_local['run_images_per_s']:,.0f} "
          "| - | - | - |")
    for w, r in best.items():
        print(f"| ray, {w} worker{'s' if w > 1 else ''}, Parquet shards | "
              f"{r['process_wall_s']:.1f} | {r['run_images_per_s']:,.0f} | "
              f"{r['ray_init_s']:.1f} | {r['actor_startup_s']:.1f} | "
              f"{r['steady_images_per_s']:,.0f} |")
    w1 = min(best)
    per_worker = best[w1]["steady_images_per_s"] / w1
    print(f"\nper-worker steady rate ({w1} worker): {per_worker:,.0f} images/s")
    print("N nodes x C cores, one worker per core, e ~ 0.85: throughput ~ N x C x "
          f"{per_worker:,.0f} x 0.85, bounded by storage and by the driver's listing")
    for nodes, cores in ((1, 16), (4, 16), (16, 16), (64, 16)):
        print(f"  {nodes:>2} x {cores}: ~{nodes * cores * per_worker * 0.85:,.0f} images/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--images", default=str(DEFAULT_IMAGES))
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--throughput-copies", type=int, default=5)
    ap.add_argument("--only", choices=sorted(CHILDREN))
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        res = CHILDREN[args.child](args.model, args.images.split(","), args.work,
                                   int(args.workers))
        print(json.dumps(res))
        return

    with tempfile.TemporaryDirectory(prefix="bench_ray.") as tmp:
        tmp = Path(tmp)
        model = str(Path(args.model) if args.model else default_model(tmp))
        copies = [str(tmp / "images" / f"copy{c}") for c in range(args.copies)]
        for c in copies:
            shutil.copytree(args.images, c)
        print(f"model: {model}\nimages: {args.copies} copies of {args.images}\n"
              f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.1f}",
              flush=True)
        workers = [int(w) for w in args.workers.split(",")]
        driver, local, ray = [], [], {w: [] for w in workers}
        for _ in range(args.repeat):  # interleaved, so a burst of other jobs hits all alike
            if args.only in (None, "driver"):
                driver.append(run_child("driver", model, copies, str(tmp / "out"),
                                        max(workers)))
            if args.only in (None, "throughput"):
                some = copies[:args.throughput_copies]
                local.append(run_local(model, some, str(tmp / "local.parquet")))
                for w in workers:
                    ray[w].append(run_child("throughput", model, some, str(tmp / f"r{w}"), w))
                    shutil.rmtree(tmp / f"r{w}", ignore_errors=True)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    if driver:
        report_driver(driver, args.copies)
    if local:
        report_throughput(local, ray)


if __name__ == "__main__":
    main()
