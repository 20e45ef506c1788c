#!/usr/bin/env python
"""`digitkit infer` throughput for a 224x224x3 image classifier over a folder of JPEG photos,
against its per-stage ceiling and its predict-only ceiling (issues 18, 20).

    python benchmarks/bench_infer_general.py --images 2000 --repeats 3

    options: [--images 2000] [--workers N] [--batch-size 64] [--arch mobilenetv2|mobilenetv3small]
             [--long-side 480] [--repeats 3] [--stage-images 500] [--stage-passes 2]

The model: `keras.applications` MobileNetV2 (or MobileNetV3Small) built with weights=None
(random weights; nothing is downloaded) for 5 classes, behind a Rescaling layer so it takes
digitkit's raw pixels, converted to ONNX by tf2onnx from a tf.function here, with the general
contract's metadata_props (class names, 224x224x3, squash bilinear): what `digitkit export`
writes for such a model. Its weights do not change its speed. The photos:
scripts/make_image_set.py's set (scikit-image's sample photos, cut and jittered), every picture
scaled up to --long-side pixels on its long side and saved as a JPEG (quality 90), one folder
per class: photo-sized files, so decoding (with the reduced-size JPEG decode) is part of what
is measured.

Measured:
- per-stage costs on one core (STAGES_SCRIPT, pinned to one CPU, chunk by chunk as a worker
  does it): read, decode (the reduced-size JPEG decode), preprocess (orientation, mode, the
  resize to 224x224, float32), predict (a one-thread ORT session, `regime_settings(B, 1)`),
  write (CSV rows), microseconds per image, best of --stage-passes. The **per-stage ceiling**
  is W cores / the summed cost per image: what the pipeline would reach if its stages ran on
  every core with no overhead between them. The same definition as
  benchmarks/bench_infer.py's step 6 for the digit pipeline, so the two ratios mean the same
  thing; issue 20's target is infer >= 0.85 of it.
- interleaved --repeats times (the best of each kept, median beside it):
  - infer: the whole `digitkit infer MODEL PHOTOS -o out.csv --workers W --batch-size B`
    process, wall clock (start-up, discovery, decode, predict, write), images per second; and
    the rate its own summary states (from the first file to the last row: no start-up);
  - the predict-only ceiling: W processes, each an ONNX Runtime session as infer's workers
    open it, predicting batches of B from the same photos already decoded to tensors
    (`load_pixels_batch`, outside the timing): what infer would reach if decoding and writing
    cost nothing. Kept beside the per-stage ratio, labelled: it is a different question (how
    much of the model's own speed the file pipeline keeps).
The lead records figures on a quiet machine (BENCHMARKS.md); figures from a busy one mean
little, so the load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))

CLASSES = ("astronaut", "brick", "cat", "coffee", "coins")
SIZE = 224


def build_onnx(arch: str, out: Path) -> Path:
    """The model as an .onnx of the general contract (see the module docstring)."""
    import logging

    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    from digitkit.model.contract import image_contract

    contract = image_contract(SIZE, SIZE, 3, CLASSES)
    keras.utils.set_random_seed(0)
    build = {"mobilenetv2": keras.applications.MobileNetV2,
             "mobilenetv3small": keras.applications.MobileNetV3Small}[arch]
    kw = {"include_preprocessing": False} if arch == "mobilenetv3small" else {}
    base = build(input_shape=(SIZE, SIZE, 3), weights=None, classes=len(CLASSES), **kw)
    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    # Keras' "tf" mode ([-1, 1]) inside the graph: the model takes raw 0..255 pixels.
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    model = keras.Model(inputs, base(x))
    spec = tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="pixels")

    @tf.function(input_signature=[spec])
    def serve(pixels):
        return {"probabilities": model(pixels, training=False)}

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                             opset=17)
    onnx.helper.set_model_props(proto, contract.onnx_metadata())
    onnx.save(proto, str(out))
    return out


def make_photos(out: Path, n: int, long_side: int, seed: int = 0) -> list[str]:
    """~n JPEG photos of --long-side pixels, one folder per class (the set's crops for
    `seed`: another seed, other crops)."""
    from make_image_set import make_image_set
    from PIL import Image

    small = out.parent / f"small-{out.name}"
    make_image_set(small, per_class=max(1, -(-n // len(CLASSES))), seed=seed)
    paths = []
    for cls in CLASSES:
        (out / cls).mkdir(parents=True)
        for i, f in enumerate(sorted((small / cls).iterdir())):
            with Image.open(f) as im:
                im = im.convert("RGB")
                scale = long_side / max(im.size)
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                               Image.Resampling.BICUBIC)
                p = out / cls / f"{i:05d}.jpg"
                im.save(p, quality=90)
                paths.append(str(p))
    return sorted(paths)[:n]


#: Per-stage cost of infer's per-file work on ONE core (this process pinned to its first allowed
#: CPU), chunk by chunk as a worker does it, as benchmarks/bench_infer.py's STAGES_SCRIPT does
#: for digits: read the bytes; decode (Pillow: open, the reduced-size JPEG draft the policy
#: allows, load); decode + preprocess (`pixels_from_bytes`: the same decode, then orientation,
#: mode, the policy's resize to 224x224 and float32: preprocess is the difference); predict
#: (ONNX Runtime with regime_settings(batch, 1), a one-core worker's session); write (encode
#: the rows as CSV and write them). `load_pixels_batch` (read + decode + preprocess as infer's
#: workers call it) is timed too, as a cross-check of those stages' sum. Best of `passes`.
STAGES_SCRIPT = """
import io, json, os, sys, time
import numpy as np
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from PIL import Image
from digitkit.images.pixels import load_pixels_batch, pixels_from_bytes
from digitkit.images.resize import draft_size, geometry
from digitkit.infer.results.formats import encode_predictions
from digitkit.predictors.ort import OnnxPredictor, regime_settings
from digitkit.predictors.runnable import model_contract
model, batch, passes, paths = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
policy = model_contract(model).pixel_policy
h, w = policy.size
chunks = [paths[i:i + batch] for i in range(0, len(paths), batch)]
settings = regime_settings(batch, cores=1)
predictor = OnnxPredictor(model, settings).load()
predictor.predict(np.zeros((1, h, w, policy.channels), np.float32))
names = ("read", "decode", "decode+preprocess", "predict", "write", "load_pixels_batch")
best = {}
for _ in range(passes):
    t = dict.fromkeys(names, 0.0)
    with open(os.devnull, "w") as sink:
        for chunk in chunks:
            t0 = time.perf_counter()
            data = []
            for p in chunk:
                with open(p, "rb") as f:
                    data.append(f.read())
            t1 = time.perf_counter()
            for d in data:
                with Image.open(io.BytesIO(d)) as im:
                    if im.format == "JPEG":
                        im.draft("RGB", draft_size(geometry(policy.resize, *im.size, h, w,
                                                            policy.crop_fraction), *im.size))
                    im.load()
            t2 = time.perf_counter()
            x = np.stack([pixels_from_bytes(d, policy) for d in data])
            t3 = time.perf_counter()
            probs = predictor.predict(x)
            t4 = time.perf_counter()
            sink.write(encode_predictions(chunk, [""] * len(chunk), probs, 3, "csv").data)
            t5 = time.perf_counter()
            load_pixels_batch(chunk, policy)
            t6 = time.perf_counter()
            for k, v in zip(names, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
                t[k] += v
    for k, v in t.items():
        best[k] = min(best.get(k, v), v)
us = {k: 1e6 * v / len(paths) for k, v in best.items()}
us["preprocess"] = us["decode+preprocess"] - us["decode"]
print(json.dumps({"files": len(paths), "batch": batch, "us_per_image": us}))
"""

#: The stages whose per-image costs sum to one core's cost per image (decode+preprocess is
#: one measured stage: decode alone is timed to show the split).
SUMMED = ("read", "decode+preprocess", "predict", "write")


def stage_costs(model: Path, paths: list[str], batch: int, passes: int) -> dict:
    """Microseconds per image of each stage on one core (STAGES_SCRIPT)."""
    import json

    cmd = [sys.executable, "-c", STAGES_SCRIPT, str(model), str(batch), str(passes), *paths]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"stage timing failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])["us_per_image"]


def _ceiling_worker(args):
    model, tensors, lo, hi, batch, barrier = args
    from digitkit.predictors.ort import OnnxPredictor, regime_settings

    x = np.load(tensors, mmap_mode="r")
    p = OnnxPredictor(model, regime_settings(batch, 1)).load()
    p.predict(np.ascontiguousarray(x[lo:lo + 1]))  # first call: not timed
    chunks = [np.ascontiguousarray(x[i:min(i + batch, hi)]) for i in range(lo, hi, batch)]
    barrier.wait()
    t0 = time.perf_counter()
    for c in chunks:
        p.predict(c)
    return time.perf_counter() - t0


def ceiling(model: Path, tensors: Path, n: int, workers: int, batch: int) -> float:
    """Images per second of `workers` one-thread sessions on pre-decoded tensors."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(workers)
        bounds = np.linspace(0, n, workers + 1).astype(int)
        jobs = [(str(model), str(tensors), int(bounds[i]), int(bounds[i + 1]), batch, barrier)
                for i in range(workers)]
        with ctx.Pool(workers) as pool:
            seconds = pool.map(_ceiling_worker, jobs)
    return n / max(seconds)


def infer_once(model: Path, photos: Path, out: Path, workers: int,
               batch: int) -> tuple[float, float]:
    """(images per second of one whole `digitkit infer` process, the rate its summary
    states)."""
    import re

    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "digitkit", "infer", str(model), str(photos), "-o", str(out),
           "--workers", str(workers), "--batch-size", str(batch)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"infer failed ({done.returncode}): {done.stderr.strip()}")
    rows = sum(1 for _ in out.open(encoding="utf-8")) - 1
    stated = re.search(r"\(([\d,.]+) images/s\)", done.stdout + done.stderr)
    return rows / wall, float(stated.group(1).replace(",", "")) if stated else float("nan")


def main(argv=None) -> None:
    from digitkit.environment import usable_cpus

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=usable_cpus())
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--arch", choices=("mobilenetv2", "mobilenetv3small"), default="mobilenetv2")
    ap.add_argument("--long-side", type=int, default=480)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stage-images", type=int, default=500,
                    help="photos the per-stage costs are measured on")
    ap.add_argument("--stage-passes", type=int, default=2)
    args = ap.parse_args(argv)
    print("$ " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), flush=True)
    print(f"load average: {', '.join(f'{v:.2f}' for v in os.getloadavg())} "
          f"(figures under load are not quiet ones)", flush=True)

    import onnxruntime
    import PIL

    from digitkit.environment import cpu_model
    from digitkit.images.pixels import load_pixels_batch
    from digitkit.predictors.runnable import model_contract

    with tempfile.TemporaryDirectory(prefix="digitkit-bench-general-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        model = build_onnx(args.arch, tmp / f"{args.arch}.onnx")
        print(f"model: {args.arch} (random weights) as ONNX, {model.stat().st_size / 1e6:.1f} MB, "
              f"built in {time.perf_counter() - t0:.0f} s", flush=True)
        photos = tmp / "photos"
        paths = make_photos(photos, args.images, args.long_side)
        for extra in sorted(str(p) for p in photos.rglob("*.jpg")):
            if extra not in set(paths):
                os.unlink(extra)
        size = sum(os.path.getsize(p) for p in paths)
        print(f"photos: {len(paths):,} JPEGs, long side {args.long_side} px, "
              f"{size / len(paths) / 1e3:.0f} kB each", flush=True)
        contract = model_contract(model)
        x, reasons = load_pixels_batch(paths, contract.pixel_policy)
        assert not any(reasons), [r for r in reasons if r][:3]
        np.save(tmp / "tensors.npy", x)
        del x
        print(f"cpu: {cpu_model()}, {usable_cpus()} usable; onnxruntime "
              f"{onnxruntime.__version__}, Pillow {PIL.__version__}; workers {args.workers}, "
              f"batch {args.batch_size}", flush=True)
        costs = stage_costs(model, paths[:args.stage_images], args.batch_size,
                            args.stage_passes)
        per_image = sum(costs[k] for k in SUMMED)
        stages_ceiling = args.workers / (per_image * 1e-6)
        print(f"per-stage cost on one core, us per image (best of {args.stage_passes} passes "
              f"over {min(len(paths), args.stage_images)} photos, batch {args.batch_size}):",
              flush=True)
        for k in ("read", "decode", "preprocess", "decode+preprocess", "predict", "write"):
            print(f"  {k:18s} {costs[k]:10,.0f}", flush=True)
        print(f"  {'sum':18s} {per_image:10,.0f}   (read + decode+preprocess + predict + write)")
        print(f"  {'load_pixels_batch':18s} {costs['load_pixels_batch']:10,.0f}   (cross-check: "
              f"read + decode+preprocess as infer's workers call it)", flush=True)
        print(f"per-stage ceiling: {args.workers} cores / {per_image / 1e3:.1f} ms = "
              f"{stages_ceiling:,.1f} images/s", flush=True)
        runs = {"infer": [], "infer rows": [], "ceiling": []}
        for r in range(args.repeats):  # interleaved: drift on the machine hits both alike
            whole, stated = infer_once(model, photos, tmp / "out.csv", args.workers,
                                       args.batch_size)
            runs["infer"].append(whole)
            runs["infer rows"].append(stated)
            runs["ceiling"].append(ceiling(model, tmp / "tensors.npy", len(paths),
                                           args.workers, args.batch_size))
            print(f"round {r + 1}: infer {whole:,.1f} images/s (summary: {stated:,.1f}), "
                  f"predict-only ceiling {runs['ceiling'][-1]:,.1f} images/s", flush=True)
    best = {k: max(v) for k, v in runs.items()}
    med = {k: statistics.median(v) for k, v in runs.items()}
    print()
    print(f"{'':40s} {'best':>10s} {'median':>10s}   (images/s, {args.repeats} rounds)")
    labels = {"infer": "infer, whole process",
              "infer rows": "infer, its summary rate (first file..last row)",
              "ceiling": "predict-only ceiling (pre-decoded tensors)"}
    for k in ("infer", "infer rows", "ceiling"):
        print(f"{labels[k]:40s} {best[k]:10,.1f} {med[k]:10,.1f}")
    print(f"{'per-stage ceiling (cores / summed cost)':40s} {stages_ceiling:10,.1f}")
    print()
    for k in ("infer", "infer rows"):
        print(f"{labels[k]} / per-stage ceiling: {best[k] / stages_ceiling:.2f} (best), "
              f"{med[k] / stages_ceiling:.2f} (median)   [issue 20's target: >= 0.85]")
    for k in ("infer", "infer rows"):
        print(f"{labels[k]} / predict-only ceiling: {best[k] / best['ceiling']:.2f} (best), "
              f"{med[k] / med['ceiling']:.2f} (median)")
    print(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
