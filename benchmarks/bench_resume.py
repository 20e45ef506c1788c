#!/usr/bin/env python
"""Reproduce BENCHMARKS.md's "Resume at scale" figures (issue 11): how `digitkit infer
--resume` starts, and how much memory it takes, against the size of the existing output.

    python benchmarks/bench_resume.py [--rows 10000,100000,1000000] [--formats csv,jsonl]
                                      [--rounds 3] [--work /tmp/digitkit-bench-resume]
                                      [--baseline-src DIR]

For each size N and format:
1. An existing result file of N rows: N - 5,000 rows of an earlier run over other folders
   (synthetic paths like /archive/batch-0042/7/0421337.png, real row text) followed by the
   first 5,000 rows of a real run over the shared 10,000 MNIST test PNGs. So `--resume`
   has to read all N rows, keep them, and classify the other 5,000 PNGs.
2. `digitkit infer MODEL PNGS -o FILE --resume -q`, a fresh copy of the file each round:
   start-up is the time from spawn until the first new row reaches the file (the scan of the
   N rows, discovery, the workers' start); total is the whole run; peak RSS is the main
   process's own maximum resident set (from wait4: the process that holds the resume state;
   the workers are the same at every N).
3. With --baseline-src (a checkout's src/ before this change), the same runs of that code,
   interleaved round by round, for comparison. Best of --rounds for times, max for memory.

The model is the tests' TensorFlow-free linear classifier (tests/_onnx_model.py): resume
cost does not depend on the model.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "data"
PNGS = SHARED / "mnist-png" / "test"
#: Rows the resumed run still has to classify (the rest of the 10,000 PNGs).
TODO = 5000


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="10000,100000,1000000")
    ap.add_argument("--formats", default="csv")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/digitkit-bench-resume"))
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="src/ of a checkout to compare with (run through PYTHONPATH)")
    args = ap.parse_args(argv)
    print("$ " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    model = _model(args.work)
    trees = {"this": REPO / "src"}
    if args.baseline_src:
        trees["baseline"] = args.baseline_src.resolve()
    results = []
    for fmt in args.formats.split(","):
        real = _real_rows(args.work, model, fmt)
        for n in map(int, args.rows.split(",")):
            pristine = _existing_output(args.work, fmt, n, real)
            best: dict[str, dict] = {}
            for r in range(args.rounds):
                for name, src in trees.items():
                    out = args.work / f"resume-{name}.{fmt}"
                    shutil.copyfile(pristine, out)
                    m = _measure(src, model, out)
                    print(f"  {fmt} {n:>9,} rows  {name:8s} round {r}: start-up "
                          f"{m['startup']:.2f} s, total {m['total']:.2f} s, main peak RSS "
                          f"{m['rss_mb']:.0f} MB", flush=True)
                    b = best.setdefault(name, dict(m))
                    b["startup"] = min(b["startup"], m["startup"])
                    b["total"] = min(b["total"], m["total"])
                    b["rss_mb"] = max(b["rss_mb"], m["rss_mb"])
            for name, b in best.items():
                results.append((fmt, n, name, b, pristine.stat().st_size))
    print("\n| format | existing rows | file | code | start-up s | total s | main peak RSS |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for fmt, n, name, b, size in results:
        print(f"| {fmt} | {n:,} | {size / 2**20:.0f} MB | {name} | {b['startup']:.2f} | "
              f"{b['total']:.2f} | {b['rss_mb']:.0f} MB |")


def _model(work: Path) -> Path:
    path = work / "linear.onnx"
    if not path.exists():
        sys.path.insert(0, str(REPO / "tests"))
        from _onnx_model import build_linear_model

        build_linear_model(SHARED / "mnist", work)
    return path


def _cli() -> list[str]:
    return [sys.executable, "-c", "import sys; from digitkit.cli import main; "
            "main(sys.argv[1:])", "infer"]


def _real_rows(work: Path, model: Path, fmt: str) -> bytes:
    """The first TODO rows of a real run over the 10,000 PNGs (header included for CSV)."""
    out = work / f"real.{fmt}"
    if not out.exists():
        argv = [*_cli(), str(model), str(PNGS), "-o", str(out), "-q", "--force"]
        print("$ " + " ".join(shlex.quote(a) for a in argv), flush=True)
        subprocess.run(argv, check=True, env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    lines = out.read_bytes().splitlines(keepends=True)
    head = 1 if fmt == "csv" else 0
    return b"".join(lines[: head + TODO])


def _existing_output(work: Path, fmt: str, n: int, real: bytes) -> Path:
    path = work / f"existing-{n}.{fmt}"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    header, body = (real.split(b"\n", 1) if fmt == "csv" else (None, real))
    with open(tmp, "wb") as f:
        if header is not None:
            f.write(header + b"\n")
        for start in range(0, n - TODO, 100_000):
            stop = min(n - TODO, start + 100_000)
            f.write(b"".join(_synthetic(i, fmt) for i in range(start, stop)))
        f.write(body)
    os.replace(tmp, path)
    return path


def _synthetic(i: int, fmt: str) -> bytes:
    # As a run over class folders writes them: 2,500 rows a folder, in order.
    d = i // 2_500 % 10
    path = f"/archive/batch-{i // 25_000:04d}/{d}/{i:07d}.png"
    if fmt == "csv":
        return f"{path},{d},0.981234,{d} 3 5,0.981234 0.012345 0.001234,\n".encode()
    return (f'{{"path": "{path}", "label": {d}, "confidence": 0.981234, "top_k_labels": '
            f'[{d}, 3, 5], "top_k_probs": [0.981234, 0.012345, 0.001234], "error": ""}}\n'
            ).encode()


def _measure(src: Path, model: Path, out: Path) -> dict:
    size0 = out.stat().st_size
    argv = [*_cli(), str(model), str(PNGS), "-o", str(out), "--resume", "-q"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=dict(os.environ, PYTHONPATH=str(src)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    startup, hwm_kb = None, 0
    while proc.poll() is None:
        if startup is None and out.stat().st_size > size0:
            startup = time.perf_counter() - t0
        hwm_kb = max(hwm_kb, _peak_rss_kb(proc.pid))
        time.sleep(0.002)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"resume run failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return {"startup": startup if startup is not None else total, "total": total,
            "rss_mb": hwm_kb / 1024}


def _peak_rss_kb(pid: int) -> int:
    """The process's peak resident set since its exec (VmHWM; wait4's ru_maxrss would also
    count the memory of this process it was forked from)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    main()
