"""Train the default architecture on the full MNIST data; print wall time and test accuracy.

Target (foundation issue): >= 99.5 % test accuracy within 10 minutes on the 2-core machine.
Runs the real CLI in a subprocess, so the wall time includes interpreter start-up, TensorFlow's
import, data loading and every report written.

    python benchmarks/bench_train.py --data ../shared/data/mnist [--arch cnn] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("DIGITKIT_DATA"))
    ap.add_argument("--arch", default="cnn")
    ap.add_argument("--seeds", default="0", help="comma-separated; one full training per seed")
    ap.add_argument("--budget-seconds", type=float, default=600.0)
    ap.add_argument("--target-accuracy", type=float, default=0.995)
    ap.add_argument("--keep", default=None, metavar="DIR",
                    help="keep the last run's artifacts in DIR (e.g. for bench_runtimes.py)")
    ap.add_argument("extra", nargs="*", help="extra arguments passed to `digitkit train`")
    args = ap.parse_args()

    digitkit = Path(sys.executable).with_name("digitkit")
    print(f"command: {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}")
    ok = True
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            out = args.keep or tmp
            cmd = [str(digitkit), "train", "--arch", args.arch, "--seed", str(seed),
                   "--out", out, "--quiet", *(["--force"] if args.keep else []),
                   *(["--data", args.data] if args.data else []),
                   *args.extra]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            wall = time.perf_counter() - t0
            rec = json.loads((Path(out) / "train.json").read_text())
        acc = rec["test"]["accuracy"]
        epochs = rec["epoch_seconds"]
        passed = acc >= args.target_accuracy and wall <= args.budget_seconds
        ok &= passed
        print(f"{args.arch} seed {seed}: test accuracy {acc:.4f}, wall {wall:.1f} s "
              f"(fit {rec['fit_seconds']:.1f} s, {len(epochs)} epochs, "
              f"{sum(epochs) / len(epochs):.1f} s/epoch) -> "
              f"{'PASS' if passed else 'FAIL'} (target >= {args.target_accuracy:.3f} "
              f"within {args.budget_seconds:.0f} s)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
