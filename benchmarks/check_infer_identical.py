"""Proof that `digitkit infer` writes the same bytes as the code at another git revision.

Runs `digitkit infer` twice per case, once with the code of REV (`git archive REV src`,
extracted to a scratch directory and put first on PYTHONPATH) and once with this working
tree, on the same inputs, model and relative output names (each side in its own directory),
then compares the outputs byte for byte:

- result files: CSV, JSON Lines and Parquet from the local engine, and a CSV file from the
  Ray engine;
- shard directories written by the Ray engine's actors (Parquet and JSON Lines shards): every
  shard file byte for byte, the same file names, and `_manifest.json` field by field except
  `seconds` and `finished` (the run's duration and end time, which legitimately vary);
- each run's exit status.

The inputs are a folder (default: the 10,000 MNIST test PNGs) and a scratch folder of three
files no decoder takes plus a good image under a name CSV must quote and UTF-8 cannot hold,
so error rows, exit status 3 and the escaped path column are compared too. The model is
the TensorFlow-free linear ONNX classifier of tests/_onnx_model.py, built from
the MNIST IDX files (a few seconds). Usage:

    python benchmarks/check_infer_identical.py [--rev main] [--inputs DIR] [--no-ray]

Prints each command line and the verdict of every comparison; exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DIGITKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
#: Manifest fields that differ between any two runs: how long it took, when it finished.
MANIFEST_VARIES = ("seconds", "finished")

#: (name, output, extra arguments): one `digitkit infer` run each.
CASES = [
    ("local CSV", "out.csv", []),
    ("local JSON Lines", "out.jsonl", []),
    ("local Parquet", "out.parquet", []),
]
RAY_CASES = [
    ("ray CSV", "ray.csv", ["--engine", "ray"]),
    ("ray Parquet shards", "shards-parquet/", ["--engine", "ray", "--shard-size", "2048"]),
    ("ray JSON Lines shards", "shards-jsonl/",
     ["--engine", "ray", "--shard-size", "2048", "--format", "jsonl"]),
]


def _model(work: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from _onnx_model import build_linear_model

    (work / "model").mkdir()
    path, _, _ = build_linear_model(SHARED / "mnist", work / "model")
    return path


def _extract(rev: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def _bad_files(work: Path, png: Path) -> Path:
    """Files that get error rows, and a good image under a name CSV must quote and UTF-8
    cannot hold (so the escaped path column is compared too)."""
    bad = work / "bad"
    bad.mkdir()
    good = png.read_bytes()
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.png").write_text("this is not a picture\n")
    (bad / "truncated.png").write_bytes(good[:len(good) // 2])
    with open(os.path.join(os.fsencode(bad), b'odd, "name" \xe9.png'), "wb") as f:
        f.write(good)
    return bad


def _run(src: Path, cwd: Path, model: Path, inputs: list, output: str, extra: list) -> int:
    cmd = [sys.executable, "-m", "digitkit", "infer", str(model), *map(str, inputs),
           "-o", output, "-q", *extra]
    env = dict(os.environ, PYTHONPATH=str(src))
    print(f"  (cd {cwd} && PYTHONPATH={src} python {' '.join(cmd[1:])})", flush=True)
    t = time.monotonic()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    print(f"    exit {r.returncode} in {time.monotonic() - t:.1f} s", flush=True)
    if r.returncode not in (0, 3):
        print(r.stderr[-2000:], flush=True)
    return r.returncode


def _compare(a: Path, b: Path) -> list[str]:
    """Differences between two outputs (files or shard directories); [] when identical."""
    if a.is_file():
        return [] if filecmp.cmp(a, b, shallow=False) else [f"{a.name}: bytes differ"]
    names_a, names_b = sorted(os.listdir(a)), sorted(os.listdir(b))
    if names_a != names_b:
        return [f"file names differ: {sorted(set(names_a) ^ set(names_b))[:5]}"]
    problems = []
    for name in names_a:
        if name == "_manifest.json":
            ma, mb = (json.loads((d / name).read_text()) for d in (a, b))
            for key in MANIFEST_VARIES:
                ma.pop(key, None)
                mb.pop(key, None)
            if ma != mb:
                problems.append("_manifest.json: " + ", ".join(
                    k for k in sorted(set(ma) | set(mb)) if ma.get(k) != mb.get(k)))
        elif not filecmp.cmp(a / name, b / name, shallow=False):
            problems.append(f"{name}: bytes differ")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="main", help="git revision to compare with (main)")
    ap.add_argument("--inputs", type=Path, default=SHARED / "mnist-png" / "test",
                    help="input folder (the 10,000 MNIST test PNGs)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray engine's cases")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args(argv)
    print("command:", " ".join([sys.executable, *sys.argv]), flush=True)
    work = Path(tempfile.mkdtemp(prefix="digitkit-identical-"))
    try:
        model = _model(work)
        inputs = [args.inputs, _bad_files(work, next(args.inputs.rglob("*.png")))]
        sides = {args.rev: _extract(args.rev, work / "rev"), "working tree": REPO / "src"}
        cases = CASES + ([] if args.no_ray else RAY_CASES)
        outdirs = {}
        for label, src in sides.items():
            outdirs[label] = out = work / f"out-{len(outdirs)}"
            out.mkdir()
            print(f"{label}: {src}", flush=True)
            for name, output, extra in cases:
                (out / f"{name}.rc").write_text(
                    str(_run(src, out, model, inputs, output, extra)))
        a, b = outdirs.values()
        failed = 0
        print(f"\n{args.rev} vs working tree, {args.inputs} and 4 files of {inputs[1]}:")
        for name, output, _ in cases:
            rc_a, rc_b = ((d / f"{name}.rc").read_text() for d in (a, b))
            problems = ([f"exit status {rc_a} vs {rc_b}"] if rc_a != rc_b else []) + \
                _compare(a / output.rstrip("/"), b / output.rstrip("/"))
            failed += bool(problems)
            size = sum(f.stat().st_size for f in [a / output] if f.is_file()) or sum(
                f.stat().st_size for f in (a / output).iterdir())
            print(f"  {name:24s} {'IDENTICAL' if not problems else 'DIFFERENT'} "
                  f"({size:,} bytes, exit {rc_a})" + "".join(f"\n    {p}" for p in problems))
        print(f"\n{len(cases) - failed} of {len(cases)} outputs identical"
              + (f" (manifests compared without {', '.join(MANIFEST_VARIES)})"
                 if not args.no_ray else ""))
        return 1 if failed else 0
    finally:
        if args.keep:
            print("scratch kept:", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
