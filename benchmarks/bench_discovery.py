#!/usr/bin/env python
"""Memory and time of listing one flat folder of many files (issue 19): what
`digitkit.images.iter_image_paths` costs for the folder `digitkit infer` walks.

    python benchmarks/bench_discovery.py [--files 1000000] [--work /tmp/digitkit-bench-disc]
                                         [--baseline-src DIR] [--rounds 1]

1. A flat folder of N empty files named like MNIST's PNG copy (0000000.png ...), made once
   and kept in --work (empty files cost inodes, not disk).
2. In a fresh process per round: import digitkit, note the peak RSS, walk the folder
   (consuming the paths one at a time, as the engine does), note the peak RSS again. The
   difference is what the listing costs; the time is the whole walk.
3. With --baseline-src (a checkout's src/ before a change), the same in that code, rounds
   interleaved.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

PROBE = r"""
import resource, sys, time
from digitkit.images import iter_image_paths
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
n = 0
for _ in iter_image_paths([sys.argv[1]]):
    n += 1
seconds = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(n, (after - before) / 1024, seconds)
"""


def make_folder(folder: Path, n: int) -> None:
    marker = folder / ".complete"
    if marker.exists() and int(marker.read_text()) == n:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = folder / f"{i:07d}.png"
        if not name.exists():
            name.touch()
    marker.write_text(str(n))


def probe(src: Path, folder: Path) -> tuple[int, float, float]:
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run([sys.executable, "-c", PROBE, str(folder)], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]), float(out[1]), float(out[2])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/digitkit-bench-discovery"))
    ap.add_argument("--baseline-src", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args(argv)
    folder = args.work / f"flat-{args.files}"
    make_folder(folder, args.files)
    sources = [("this checkout", REPO / "src")]
    if args.baseline_src:
        sources.append(("baseline", args.baseline_src))
    for r in range(args.rounds):
        for name, src in sources:
            n, mb, seconds = probe(src, folder)
            print(f"round {r + 1}  {name:14s} {n:,} files  +{mb:,.0f} MB peak RSS  "
                  f"{seconds:.2f} s", flush=True)


if __name__ == "__main__":
    main()
