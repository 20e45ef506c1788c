#!/usr/bin/env python
"""Measure what digitkit.predictors.ort.regime_settings decides: ONNX Runtime's intra-op
threads and spinning per batch size, against the fp32 (and bf16) peers at the same threads.

    python benchmarks/bench_ort_regimes.py EXPORT_DIR [EXPORT_DIR...] [--rounds 8]
        [--slice 0.25] [--batches 1,32,512] [--only PREFIX,...] [--json out.json]

Method, for a shared machine whose load changes by the second:
- every configuration lives in its own process (its own thread pools and affinity: OpenVINO
  pins its threads, and a pool created by a pinned thread inherits the pin), loaded once and
  kept alive, idle between its turns;
- the parent hands out short slices (--slice seconds of timed calls at one batch size) round
  robin over the configurations, --rounds times, so a burst of outside load hits every
  configuration alike; the best slice is kept (load can slow a slice down, never speed it up);
- for every slice the parent reads /proc/stat: the CPU the rest of the machine used during
  it (busy time not spent by the measured process), in cores, is printed beside the result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

CHILD = textwrap.dedent("""
    import json, sys, time, numpy as np
    from digitkit.bench.runner import time_batch
    from digitkit.data import read_idx
    cfg = json.loads(sys.argv[1])
    x, _ = read_idx(cfg["data"] + "/t10k-images-idx3-ubyte.gz")
    x = x.astype(np.float32)
    kind, path, threads = cfg["kind"], cfg["path"], cfg["threads"]
    if kind == "ort":
        from digitkit.predictors.ort import OnnxPredictor, OrtSettings
        p = OnnxPredictor(path, OrtSettings(threads, cfg["spinning"])).load()
    elif kind == "ort-variant":
        # What ORT offers beyond digitkit's settings, tried and measured (not used by digitkit
        # unless it wins): the options start from digitkit's own session_options.
        import onnxruntime as ort
        from digitkit.predictors.ort import OrtSettings, session_options
        so = session_options(OrtSettings(threads, cfg["spinning"]))
        if cfg.get("level"):
            so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, cfg["level"])
        for k, v in cfg.get("entries", {}).items():
            so.add_session_config_entry(k, v)
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        i, o = s.get_inputs()[0].name, s.get_outputs()[0].name
        class P:
            def predict(self, b):
                return (s._sess.run([o], {i: b}, None) if cfg.get("raw")
                        else s.run([o], {i: b}))[0]
        p = P()
    elif kind == "ort-regime":
        from digitkit.predictors.ort import RegimeOnnxPredictor
        p = RegimeOnnxPredictor(path, cores=threads).load()
    elif kind == "openvino":
        from digitkit.predictors.openvino import OpenVinoPredictor
        p = OpenVinoPredictor(path, threads, cfg["precision"]).load()
    elif kind == "litert":
        from digitkit.predictors.litert import LiteRTPredictor
        p = LiteRTPredictor(path, threads).load()
    for b in cfg["batches"]:  # first calls and lazy sessions out of the way
        p.predict(x[:b])
    print("ready", flush=True)
    for line in sys.stdin:
        b, seconds = json.loads(line)
        c0 = time.process_time()
        r = time_batch(p.predict, x, b, 3, seconds, None)
        print(json.dumps([r["images_per_s"], time.process_time() - c0]), flush=True)
""")


def configs(export: Path, cores: int) -> dict[str, dict]:
    onnx, tfl = str(export / "model.onnx"), str(export / "model.tflite")
    c: dict[str, dict] = {}
    for t in sorted({1, cores}):
        c[f"ort t{t} spin-off"] = {"kind": "ort", "path": onnx, "threads": t, "spinning": False}
        if t > 1:
            c[f"ort t{t} spin-on"] = {"kind": "ort", "path": onnx, "threads": t,
                                      "spinning": True}
        c[f"openvino-fp32 t{t}"] = {"kind": "openvino", "path": onnx, "threads": t,
                                    "precision": "fp32"}
        c[f"openvino-bf16 t{t}"] = {"kind": "openvino", "path": onnx, "threads": t,
                                    "precision": "bf16"}
        if Path(tfl).is_file():
            c[f"litert t{t}"] = {"kind": "litert", "path": tfl, "threads": t}
    c[f"ort-regime c{cores}"] = {"kind": "ort-regime", "path": onnx, "threads": cores}
    variant = {"kind": "ort-variant", "path": onnx, "threads": cores, "spinning": True}
    c[f"variant t{cores} spin-on EXTENDED"] = dict(variant, level="ORT_ENABLE_EXTENDED")
    c[f"variant t{cores} spin-on BASIC"] = dict(variant, level="ORT_ENABLE_BASIC")
    c[f"variant t{cores} spin-on dynamic_block_base=4"] = dict(
        variant, entries={"session.dynamic_block_base": "4"})
    c[f"variant t{cores} spin-on no python checks"] = dict(variant, raw=True)
    return c


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def label(export: Path) -> str:
    return export.parent.name if export.name == "export" else export.name


def measure_model(export: Path, args, batches) -> dict:
    chosen = {name: cfg for name, cfg in configs(export, args.cores).items()
              if not args.only or name.startswith(tuple(args.only.split(",")))}
    return measure(chosen, label(export), args, batches)


def measure(chosen: dict[str, dict], tag: str, args, batches) -> dict:
    """{name: {batch: [(images/s, others' cores), ...]}} over args.rounds interleaved rounds
    of args.slice seconds; each configuration in its own process (see the docstring)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    procs = {}
    for name, cfg in chosen.items():
        cfg = dict(cfg, data=args.data, batches=batches)
        procs[name] = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg)],
                                       env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True)
    for name, p in list(procs.items()):
        if p.stdout.readline().strip() != "ready":
            print(f"  {tag} {name}: failed to load")
            del procs[name]
    slices: dict = {name: {b: [] for b in batches} for name in procs}
    try:
        for r in range(args.rounds):
            for b in batches:
                for name, p in procs.items():
                    t0, busy0 = time.perf_counter(), busy_seconds()
                    p.stdin.write(json.dumps([b, args.slice]) + "\n")
                    p.stdin.flush()
                    ips, own_cpu = json.loads(p.stdout.readline())
                    wall, busy = time.perf_counter() - t0, busy_seconds() - busy0
                    others = max(0.0, busy - own_cpu) / wall  # cores busy with other work
                    slices[name][b].append((ips, others))
            print(f"  {tag}: round {r + 1}/{args.rounds} done, load average "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait()
    return slices


def table_rows(tag: str, slices: dict, batches) -> list[str]:
    """Markdown rows: the best slice per batch size, with the other processes' load."""
    lines = []
    for name, per_b in slices.items():
        cells = []
        for b in batches:
            best = max(per_b[b])
            med_others = statistics.median(o for _, o in per_b[b])
            cells.append(f"{best[0]:,.0f} ({best[1]:.1f}; median {med_others:.1f})")
        lines.append(f"| {tag} | {name} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("exports", nargs="+", type=Path)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" /
                                          "data" / "mnist"))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--slice", type=float, default=0.25, help="seconds per timed slice")
    ap.add_argument("--batches", default="1,32,512")
    ap.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--only", default=None, help="comma-separated name prefixes to run")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    start_load = os.getloadavg()
    record = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv,
              "cpu_cores": args.cores, "load_average_start": start_load, "models": {}}
    lines = ["| model | configuration | " + " | ".join(
        f"b={b} img/s (others' load)" for b in batches) + " |",
        "|---|---|" + "--:|" * len(batches)]
    for export in args.exports:
        slices = measure_model(export, args, batches)
        record["models"][label(export)] = slices
        lines += table_rows(label(export), slices, batches)
    record["load_average_end"] = os.getloadavg()
    print(f"\nload average: start {start_load}, end {record['load_average_end']}")
    print("best slice per configuration; in brackets the cores other processes kept busy "
          "during that slice, and the median over all its slices:")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
