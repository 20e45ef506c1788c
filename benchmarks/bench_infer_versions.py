#!/usr/bin/env python
"""Whole-process `digitkit infer` at two code versions, interleaved (issue 20's regression).

    python benchmarks/bench_infer_versions.py --model model.onnx [--old ad45d7c] [--new .]
        [--files 100000] [--rounds 6] [--work /tmp/digitkit-bench-versions] [--profile]

Each version is a git revision (checked out once as a detached `git worktree` under --work)
or "." for this checkout's own src/ (uncommitted edits included). Both run the same
interpreter, the same ONNX file and the same --files PNGs (the shared MNIST test PNGs copied
into class folders, as bench_infer.py builds them). Runs alternate old, new, old, new...,
so a load that comes and goes on a shared machine falls on both.

Per run: wall seconds from spawn to exit, the main process's own CPU seconds (user + system
of that process alone, `getrusage(RUSAGE_SELF)` at exit: neither the workers nor the
forkserver), which a loaded machine disturbs far less than the wall, and the CPU of the
whole process tree (the main process's plus its descendants', polled every 20 ms).
--profile adds one more run of each version under cProfile (the main process only, CPU
time) and prints its top functions by own time. The outputs of both versions are compared
byte for byte.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from bench_infer import SHARED, replicate  # noqa: E402

#: Runs `digitkit` in this process, as the console script would, and writes this process's
#: own CPU time (not its children's) to $BENCH_RUSAGE at exit; under cProfile if
#: $BENCH_PROFILE names a file for the stats.
WRAPPER = textwrap.dedent("""
    import atexit, json, os, resource, sys
    def _report():
        r = resource.getrusage(resource.RUSAGE_SELF)
        if os.environ.get("BENCH_MODULES"):
            with open(os.environ["BENCH_MODULES"], "w") as f:
                f.write("\\n".join(sorted(sys.modules)))
        with open(os.environ["BENCH_RUSAGE"], "w") as f:
            json.dump({"user": r.ru_utime, "sys": r.ru_stime, "maxrss_kb": r.ru_maxrss}, f)
    atexit.register(_report)
    sys.argv = ["digitkit", *sys.argv[1:]]
    if os.environ.get("BENCH_PROFILE"):
        import cProfile, time
        prof = cProfile.Profile(time.process_time)  # CPU time: a loaded machine's waits apart
        atexit.register(lambda: prof.dump_stats(os.environ["BENCH_PROFILE"]))
        prof.enable()
    from digitkit.cli import main
    main()
""")


def source_of(version: str, work: Path) -> Path:
    """The src/ folder of `version`: this checkout's for ".", else a worktree of that rev."""
    if version == ".":
        return REPO / "src"
    sha = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", version], check=True,
                         capture_output=True, text=True).stdout.strip()
    tree = work / f"rev-{sha}"
    if not tree.exists():
        sh(["git", "-C", REPO, "worktree", "add", "--detach", tree, sha])
    return tree / "src"


def sh(argv) -> None:
    print("$ " + " ".join(shlex.quote(str(a)) for a in argv), flush=True)
    subprocess.run([str(a) for a in argv], check=True)


def run_once(src: Path, argv: list, work: Path, profile: Path | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), BENCH_RUSAGE=str(work / "rusage.json"))
    if profile is not None:
        env["BENCH_PROFILE"] = str(profile)
    seen: dict[int, float] = {}  # descendant pid -> last CPU seconds seen
    t0 = time.perf_counter()
    proc = psutil.Popen([sys.executable, "-c", WRAPPER, *map(str, argv)], env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def poll():  # the workers' and the forkserver's CPU: polled, so a few ms may be missed
        while proc.poll() is None:
            try:
                kids = proc.children(recursive=True)
            except psutil.Error:
                kids = []
            for k in kids:
                try:
                    t = k.cpu_times()
                    seen[k.pid] = max(seen.get(k.pid, 0.0), t.user + t.system)
                except psutil.Error:
                    pass
            time.sleep(0.02)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    watcher.join()
    if proc.returncode != 0:
        sys.exit(f"failed (exit {proc.returncode}): {err[-2000:]}")
    ru = json.loads((work / "rusage.json").read_text())
    main_cpu = ru["user"] + ru["sys"]
    return {"wall": wall, "main_cpu": main_cpu, "user": ru["user"], "sys": ru["sys"],
            "tree_cpu": main_cpu + sum(seen.values()), "rss_mb": ru["maxrss_kb"] / 1024}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="an ONNX model (e.g. the seed "
                    "MLP: `digitkit train --arch seed-mlp`, `digitkit export --format onnx`)")
    ap.add_argument("--old", default="ad45d7c")
    ap.add_argument("--new", default=".")
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--work", type=Path, default=Path("/tmp/digitkit-bench-versions"))
    ap.add_argument("--images", type=Path, default=SHARED / "mnist-png" / "test")
    ap.add_argument("--profile", action="store_true",
                    help="one more run of each under cProfile (main process): top functions")
    args = ap.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    tree = replicate(args.images, work / f"png{args.files}", args.files)
    versions = {"old": source_of(args.old, work), "new": source_of(args.new, work)}
    print(f"old = {args.old} ({versions['old']}), new = {args.new} ({versions['new']})")
    print(f"python: {sys.executable}; cpus: {os.cpu_count()}")
    print("each run, PYTHONPATH=<version>/src:")
    cmd = {v: ["infer", args.model.resolve(), tree, "-o", work / f"{v}.csv", "-q", "--force"]
           for v in versions}
    print("  python -m digitkit " + " ".join(shlex.quote(str(a)) for a in cmd["new"]))
    for v, src in versions.items():  # warm the page cache and the imports
        run_once(src, cmd[v], work)
    same = (work / "old.csv").read_bytes() == (work / "new.csv").read_bytes()
    print(f"outputs byte-identical: {same}")
    results: dict[str, list[dict]] = {v: [] for v in versions}
    print(f"{'round':>5} {'version':>7} {'wall s':>7} {'main CPU s':>10} {'user':>6} "
          f"{'sys':>6} {'tree CPU s':>10} {'RSS MB':>7} {'load':>5}")
    for i in range(args.rounds):
        order = list(versions) if i % 2 == 0 else list(reversed(versions))
        for v in order:
            r = run_once(versions[v], cmd[v], work)
            results[v].append(r)
            print(f"{i + 1:>5} {v:>7} {r['wall']:7.2f} {r['main_cpu']:10.2f} {r['user']:6.2f} "
                  f"{r['sys']:6.2f} {r['tree_cpu']:10.2f} {r['rss_mb']:7.0f} "
                  f"{os.getloadavg()[0]:5.1f}", flush=True)
    print(f"\n{args.files:,} files, {args.rounds} rounds each; best / median")
    for v, rs in results.items():
        walls, cpus = [r["wall"] for r in rs], [r["main_cpu"] for r in rs]
        trees = [r["tree_cpu"] for r in rs]
        print(f"  {v} ({args.old if v == 'old' else args.new}): wall {min(walls):.2f} / "
              f"{statistics.median(walls):.2f} s ({args.files / min(walls):,.0f} / "
              f"{args.files / statistics.median(walls):,.0f} images/s); main CPU "
              f"{min(cpus):.2f} / {statistics.median(cpus):.2f} s; tree CPU {min(trees):.2f} / "
              f"{statistics.median(trees):.2f} s")
    print(f"load average after: {os.getloadavg()}")
    if args.profile:
        import pstats

        for v, src in versions.items():
            stats = work / f"{v}.prof"
            run_once(src, cmd[v], work, profile=stats)
            print(f"\n== {v}: main process under cProfile, by own time ==")
            pstats.Stats(str(stats)).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
