#!/usr/bin/env python
"""Whole-process `digitkit infer --runtime X` for every runtime and `auto`, interleaved.

    python benchmarks/bench_infer_runtimes.py EXPORT_DIR [FOLDER] [--rounds 3]
        [--runtimes onnxruntime,openvino,litert,tensorflow,auto] [--precision fp32]
        [--batch-size 256] [--workers N] [--data MNIST] [--work DIR] [--json OUT]

EXPORT_DIR: a `digitkit export` directory (every runtime takes its own copy from it).
FOLDER: the PNGs to classify (default: the shared MNIST test PNGs, ../shared/data/mnist-png/
test beside the checkout; bench_infer.py's replicate() makes 100,000 of them).

Each run is `digitkit infer EXPORT_DIR FOLDER -o OUT.csv --runtime X -q` in a fresh process,
timed from spawn to exit. Runs alternate X1, X2, ..., X1, X2, ... for --rounds rounds, so a
load that comes and goes on a shared machine falls on every runtime alike; the best round
counts (outside load only slows a run) and the median is printed beside it. `auto` uses a
cache of this benchmark's own (--work/cache): its first run calibrates and is timed apart,
every round after it reads the cache, as a user's second run does. Every run's labels are
compared with ONNX Runtime's. The command lines are printed, and with --json the figures.
Runtimes whose extra is not installed are skipped with a note.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_FOLDER = REPO.parent / "shared" / "data" / "mnist-png" / "test"
DEFAULT_RUNTIMES = "onnxruntime,openvino,litert,tensorflow,auto"


def command(args, runtime: str, out: Path) -> list[str]:
    argv = [sys.executable, "-m", "digitkit", "infer", str(args.export), str(args.folder),
            "-o", str(out), "--force", "-q", "--runtime", runtime,
            "--batch-size", str(args.batch_size)]
    if args.precision != "fp32":
        argv += ["--precision", args.precision]
    if args.workers is not None:
        argv += ["--workers", str(args.workers)]
    if runtime == "auto" and args.data:
        argv += ["--data", str(args.data)]
    return argv


def run(argv: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {shlex.join(argv)}\n{proc.stderr}")
    return wall, proc.stderr


def labels(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as f:
        return {r["path"]: r["label"] for r in csv.DictReader(f)}


def available(runtime: str, precision: str) -> str | None:
    """Why `runtime` cannot run here (its extra is not installed), or None."""
    if runtime == "auto":
        return None
    from digitkit.errors import DigitkitError
    from digitkit.predictors.serving import serving_row

    try:
        return serving_row(runtime, precision).unavailable()
    except DigitkitError as err:
        return err.message


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export", type=Path)
    ap.add_argument("folder", type=Path, nargs="?", default=DEFAULT_FOLDER)
    ap.add_argument("--runtimes", default=DEFAULT_RUNTIMES)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    ap.add_argument("--work", type=Path, default=Path("/tmp/digitkit-bench-infer-runtimes"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not args.folder.is_dir():
        sys.exit(f"{args.folder}: no such folder of images")
    args.work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DIGITKIT_CACHE=str(args.work / "cache"),
               TF_CPP_MIN_LOG_LEVEL="2")
    runtimes = []
    for x in args.runtimes.split(","):
        why = available(x, args.precision)
        if why:
            print(f"note: skipping {x}: {why}")
        else:
            runtimes.append(x)
    files = sum(1 for _ in args.folder.rglob("*.png"))
    print(f"{files:,} PNGs in {args.folder}; runtimes {', '.join(runtimes)}; "
          f"{args.rounds} interleaved rounds")
    for x in runtimes:
        print("$ " + shlex.join(command(args, x, args.work / f"{x}.csv")))

    first_auto = None
    if "auto" in runtimes:  # the calibrating run, timed apart from the rounds
        cache = args.work / "cache" / "runtime-choice"
        for old in cache.glob("*.json") if cache.is_dir() else ():
            old.unlink()
        first_auto, said = run(command(args, "auto", args.work / "auto.csv"), env)
        print(f"auto, first run (calibrating): {first_auto:.2f} s")
        print("  " + next((ln for ln in said.splitlines() if "auto chose" in ln), said.strip()))

    walls: dict[str, list[float]] = {x: [] for x in runtimes}
    chosen = None
    for r in range(args.rounds):
        for x in runtimes:
            wall, said = run(command(args, x, args.work / f"{x}.csv"), env)
            walls[x].append(wall)
            if x == "auto":
                assert "calibrating" not in said, said
                line = next(ln for ln in said.splitlines() if "auto chose" in ln)
                chosen = line.split("auto chose ")[1].split(" ")[0]
        print(f"round {r + 1}: " + ", ".join(f"{x} {walls[x][-1]:.2f} s" for x in runtimes),
              flush=True)

    ref = labels(args.work / f"{runtimes[0]}.csv")
    print(f"\n{'runtime':<14} {'best s':>8} {'median s':>9} {'images/s':>10} "
          f"{'agree w/ ' + runtimes[0]:>18}")
    figures = {}
    for x in runtimes:
        best, med = min(walls[x]), statistics.median(walls[x])
        mine = labels(args.work / f"{x}.csv")
        agree = sum(mine.get(k) == v for k, v in ref.items()) / len(ref)
        name = f"auto={chosen}" if x == "auto" else x
        print(f"{name:<14} {best:>8.2f} {med:>9.2f} {files / best:>10,.0f} {agree:>18.2%}")
        figures[x] = {"walls_s": walls[x], "best_s": best, "median_s": med,
                      "images_per_s": files / best, "agreement": agree}
    named = [x for x in runtimes if x != "auto"]
    if "auto" in runtimes and named:
        fastest = min(named, key=lambda x: min(walls[x]))
        ratio = min(walls[fastest]) / min(walls["auto"])
        print(f"\nauto chose {chosen}; auto / fastest named runtime ({fastest}): {ratio:.3f} "
              f"of its speed; first auto run (calibrating) {first_auto:.2f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "command": shlex.join(sys.argv), "files": files, "folder": str(args.folder),
            "export": str(args.export), "batch_size": args.batch_size,
            "precision": args.precision, "rounds": args.rounds, "auto_chose": chosen,
            "auto_first_run_s": first_auto, "runtimes": figures}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
