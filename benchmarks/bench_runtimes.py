#!/usr/bin/env python
"""Reproduce BENCHMARKS.md's runtime comparison (issue: bench) on one machine.

    python benchmarks/bench_runtimes.py [--data DIR] [--images DIR] [--out benchmarks/results]

Steps, each printed with its command line:
1. train seed-mlp (its reference recipe: 3 epochs, batch 32) and the default CNN briefly
   (1 epoch, no augmentation, so the script stays minutes long; weights do not change
   speed, and the cross-check still needs a real classifier, not random weights) -- or take
   trained models with --seed-mlp-h5 / --cnn-h5;
2. `digitkit export --quantize int8` for both (SavedModel, ONNX, LiteRT, and int8 ONNX where
   it validates);
3. `digitkit bench` over batch sizes 1,8,32,128,512,2048, every runtime, --repeat 2;
4. `digitkit bench --images` end to end over the MNIST test PNGs (decode + preprocess + infer);
5. writes results/bench.json, results/bench.png, results/bench_e2e.json and results/bench.md
   (every runtime side by side with precision, size, load time and accuracy; ONNX Runtime's
   ratios against the best fp32 peer and the best TensorFlow path), and prints them.
Targets: issue 5, ONNX Runtime >= the best TensorFlow path at every batch size and >= 10x at
batch size 1; issue 13, ONNX Runtime float ahead of every fp32 peer (OpenVINO fp32, LiteRT)
at batch 1, 32 and 512. Every runtime needs `pip install 'digitkit[runtimes]'`.
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
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist"
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "mnist-png" / "test"
BATCH_SIZES = "1,8,32,128,512,2048"


def rel(p) -> str:
    """Paths in printed and recorded commands relative to where the script was run."""
    r = os.path.relpath(p)
    return r if not r.startswith("../../") else str(p)


def sh(argv: list[str], **kw) -> subprocess.CompletedProcess:
    print("$ " + " ".join(shlex.quote(str(a)) for a in argv), flush=True)
    return subprocess.run([str(a) for a in argv], check=False, **kw)


def train(arch: str, out: Path, data: Path, epochs: int, batch: int) -> Path:
    """Train in a child process so this script never holds TensorFlow's threads."""
    code = f"""
import numpy as np, keras
from digitkit.data import read_idx
from digitkit.architectures import build_model, compile_model
x, _ = read_idx({str(data / 'train-images-idx3-ubyte.gz')!r})
y, _ = read_idx({str(data / 'train-labels-idx1-ubyte.gz')!r})
keras.utils.set_random_seed(0)
m = compile_model(build_model({arch!r}), 1e-3)
m.fit(x.astype(np.float32), y, epochs={epochs}, batch_size={batch}, verbose=2)
m.save({str(out)!r})
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if sh([sys.executable, "-c", code], env=env).returncode != 0:
        sys.exit(f"training {arch} failed")
    return out


def export(h5: Path, out: Path, data: Path) -> Path:
    r = sh([sys.executable, "-m", "digitkit", "export", h5, "--out", out, "--quantize", "int8",
            "--data", data, "--force"])
    # Exit 4: a copy (typically int8) failed validation and was set aside as *.FAILED; the
    # float copies are still good, and the bench runs int8 only where it is present.
    if r.returncode not in (0, 4):
        sys.exit(f"export of {h5} failed (exit {r.returncode})")
    return out


def markdown(record: dict, e2e: dict | None, command: str, e2e_command: str | None) -> str:
    env = record["environment"]
    v = env["versions"]
    sizes = record["settings"]["batch_sizes"]
    ort_threads = env["threads"]["onnxruntime"]
    lines = [
        f"Measured {record['date']} on {env['cpu']}, {env['logical_cores']} logical cores "
        f"(affinity {env['affinity']}), {env['memory_gb']} GiB; {record['settings']['threads']} "
        f"threads for every runtime (ONNX Runtime per regime: "
        f"{json.dumps(ort_threads.get('per_batch', ort_threads))}); Python {v['python']}, "
        f"onnxruntime {v.get('onnxruntime')}, openvino {v.get('openvino', '-')}, "
        f"ai-edge-litert {v.get('ai-edge-litert', '-')}, "
        f"tensorflow {v.get('tensorflow-cpu', v.get('tensorflow'))}, keras {v.get('keras')}. "
        f"Load average at start: {', '.join(f'{x:.2f}' for x in env['load_average'] or [])}, "
        f"at end: {', '.join(f'{x:.2f}' for x in record.get('load_average_end') or [])} "
        "(shared machine).",
        "",
        f"Command: `{command}`",
        "",
        "Every runtime side by side (images/s; accuracy on the 10,000 MNIST test images, "
        "top-1 agreement with Keras):",
        "",
        "| model | engine | precision | size MB | load s | accuracy | agreement | "
        + " | ".join(f"b={b}" for b in sizes) + " |",
        "|---|---|---|--:|--:|--:|--:|" + "--:|" * len(sizes),
    ]
    for m in record["models"]:
        for e, r in m["results"].items():
            c = r["check"]
            agree = ("reference" if e == m["reference"] else
                     f"{100 * c['top1_agreement']:.2f}%" + ("" if c["ok"] else " **FLAGGED**"))
            prec = record["engines"][e]["precision"]
            lines.append(f"| {m['model']} | {e} | {prec} | {r.get('size_bytes', 0) / 2**20:.2f} "
                         f"| {r['load_s']:.2f} | {100 * c['accuracy']:.2f}% | {agree} | "
                         + " | ".join(f"{pb['images_per_s']:,.0f}" for pb in r["per_batch"])
                         + " |")
        for e, why in record.get("unavailable", {}).items():
            lines.append(f"| {m['model']} | {e} | {record['engines'][e]['precision']} | - | - "
                         f"| - | {why} | " + " | ".join("-" for _ in sizes) + " |")
    lines += ["", "ONNX Runtime's throughput divided by the best fp32 peer's (OpenVINO fp32, "
              "LiteRT, TensorFlow's paths) and by the best TensorFlow path's, per batch size:",
              "", "| model | engine | against | " + " | ".join(f"b={b}" for b in sizes) + " |",
              "|---|---|---|" + "--:|" * len(sizes)]
    for m in record["models"]:
        by_engine: dict[str, dict] = {}
        for c in m["comparison"]:
            by_engine.setdefault(c["engine"], {})[c["batch"]] = c
        for e, cs in by_engine.items():
            for key, peer, what in (("peer_throughput_ratio", "best_fp32_peer", "best fp32 peer"),
                                    ("throughput_ratio", "best_tf_engine", "best TF path")):
                cells = " | ".join(
                    "-" if cs[b][key] is None else f"{cs[b][key]:.2f}x ({cs[b][peer]})"
                    for b in sizes)
                lines.append(f"| {m['model']} | {e} | {what} | {cells} |")
    lines += ["", "Latency and memory per batch size:", "",
              "| model | engine | batch | images/s | p50 ms | p99 ms | first call ms | "
              "peak RSS MB |", "|---|---|--:|--:|--:|--:|--:|--:|"]
    for m in record["models"]:
        for e, r in m["results"].items():
            for pb in r["per_batch"]:
                lat = pb["latency_ms"]
                lines.append(f"| {m['model']} | {e} | {pb['batch']} | {pb['images_per_s']:,.0f} "
                             f"| {lat['p50']:.3f} | {lat['p99']:.3f} | {pb['first_call_ms']:.2f} "
                             f"| {pb['peak_rss_mb']:.0f} |")
    if e2e is not None:
        lines += ["", f"End to end over the MNIST test PNGs (decode + preprocess with "
                  f"`digitkit.images.load_image`, then infer). Command: `{e2e_command}`", "",
                  "| model | engine | batch | files | images/s | preprocess ms/img | "
                  "inference ms/img | top-1 agreement |", "|---|---|--:|--:|--:|--:|--:|--:|"]
        for m in e2e["models"]:
            for e, r in m["results"].items():
                for x in r["end_to_end"]:
                    a = x.get("top1_agreement")
                    lines.append(f"| {m['model']} | {e} | {x['batch']} | {x['images']} | "
                                 f"{x['images_per_s']:,.0f} | {x['preprocess_ms_per_image']:.4f} "
                                 f"| {x['inference_ms_per_image']:.4f} | "
                                 f"{'-' if a is None else f'{100 * a:.2f}%'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MNIST IDX directory")
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                    help="image folder for the end-to-end run ('' to skip)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--work", type=Path, default=HERE / "work",
                    help="models and exports (git-ignored scratch)")
    ap.add_argument("--seed-mlp-h5", type=Path, default=None)
    ap.add_argument("--cnn-h5", type=Path, default=None)
    ap.add_argument("--duration", default="1.5", help="seconds per runtime and batch size")
    ap.add_argument("--repeat", default="3", help="round-robin rounds (best kept)")
    ap.add_argument("--skip-export", action="store_true",
                    help="reuse exports already under --work")
    ap.add_argument("--report-only", action="store_true",
                    help="rebuild bench.md and bench.png from the JSON records in --out")
    args = ap.parse_args()

    if args.report_only:
        record = json.loads((args.out / "bench.json").read_text())
        e2e_path = args.out / "bench_e2e.json"
        e2e = json.loads(e2e_path.read_text()) if e2e_path.is_file() else None
        md = markdown(record, e2e, record["command"], e2e and e2e["command"])
        (args.out / "bench.md").write_text(md)
        from digitkit.bench.tables import save_plot

        save_plot(record, args.out / "bench.png")
        print(md)
        return 0

    t0 = time.time()
    work = args.work
    exports = {"seed-mlp": work / "seed-mlp", "cnn": work / "cnn"}
    if not args.skip_export:
        h5 = {
            "seed-mlp": args.seed_mlp_h5 or train("seed-mlp", work / "seed-mlp.h5", args.data,
                                                  epochs=3, batch=32),
            "cnn": args.cnn_h5 or train("cnn", work / "cnn.h5", args.data, epochs=1, batch=128),
        }
        for name, out in exports.items():
            export(h5[name], out, args.data)

    args.out.mkdir(parents=True, exist_ok=True)
    bench_argv = ["digitkit", "bench", *map(rel, exports.values()), "--batch-sizes", BATCH_SIZES,
                  "--duration", args.duration, "--repeat", args.repeat, "--data", rel(args.data),
                  "--json", rel(args.out / "bench.json"), "--plot", rel(args.out / "bench.png"),
                  "--force"]
    rc = sh([sys.executable, "-m", "digitkit", *bench_argv[1:]]).returncode
    if rc not in (0, 4):
        return rc
    record = json.loads((args.out / "bench.json").read_text())
    record["load_average_end"] = list(os.getloadavg())
    (args.out / "bench.json").write_text(json.dumps(record, indent=1))

    e2e = e2e_cmd = None
    if str(args.images) not in ("", "."):
        e2e_argv = ["digitkit", "bench", *map(rel, exports.values()), "--batch-sizes",
                    "1,32,512", "--duration", args.duration, "--data", rel(args.data),
                    "--images", rel(args.images), "--json", rel(args.out / "bench_e2e.json"),
                    "--force"]
        rc = sh([sys.executable, "-m", "digitkit", *e2e_argv[1:]]).returncode
        if rc not in (0, 4):
            return rc
        e2e = json.loads((args.out / "bench_e2e.json").read_text())
        e2e_cmd = " ".join(shlex.quote(a) for a in e2e_argv)

    md = markdown(record, e2e, " ".join(shlex.quote(a) for a in bench_argv), e2e_cmd)
    (args.out / "bench.md").write_text(md)
    print("\n" + md)
    print(f"script: {' '.join(shlex.quote(a) for a in sys.argv)}  ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
