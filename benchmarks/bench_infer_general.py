#!/usr/bin/env python
"""`digitkit infer` throughput for a 224x224x3 image classifier over a folder of JPEG photos,
against its predict ceiling (issue 18).

    python benchmarks/bench_infer_general.py [--images 2000] [--workers N] [--batch-size 64]
                                             [--arch mobilenetv2|mobilenetv3small]
                                             [--long-side 480] [--repeats 3]

The model: `keras.applications` MobileNetV2 (or MobileNetV3Small) built with weights=None
(random weights; nothing is downloaded) for 5 classes, behind a Rescaling layer so it takes
digitkit's raw pixels, converted to ONNX by tf2onnx from a tf.function here, with the general
contract's metadata_props (class names, 224x224x3, squash bilinear): what `digitkit export`
writes for such a model. The photos: scripts/make_image_set.py's set (scikit-image's sample
photos, cut and jittered), every picture scaled up to --long-side pixels on its long side and
saved as a JPEG (quality 90), one folder per class: photo-sized files, so decoding (with the
reduced-size JPEG decode) is part of what is measured.

Measured, interleaved --repeats times (the best of each kept, median beside it):
- infer: the whole `digitkit infer MODEL PHOTOS -o out.csv --workers W --batch-size B`
  process, wall clock (start-up, discovery, decode, predict, write), images per second; and
  the rate its own summary states (from the first file to the last row: no start-up);
- ceiling: W processes, each an ONNX Runtime session as infer's workers open it (one thread,
  no spinning: `regime_settings(B, 1)`), predicting batches of B from the same photos already
  decoded to tensors (`load_pixels_batch`, outside the timing): what infer would reach if
  decoding and writing cost nothing.
The ratio infer/ceiling is the share of the model's own speed that the file pipeline keeps.
The lead records figures on a quiet machine (BENCHMARKS.md); figures from a busy one mean
little.
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


def make_photos(out: Path, n: int, long_side: int) -> list[str]:
    """~n JPEG photos of --long-side pixels, one folder per class."""
    from make_image_set import make_image_set
    from PIL import Image

    small = out.parent / "small"
    make_image_set(small, per_class=max(1, -(-n // len(CLASSES))))
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
    args = ap.parse_args(argv)
    print("$ " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), flush=True)

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
        runs = {"infer": [], "infer rows": [], "ceiling": []}
        for r in range(args.repeats):  # interleaved: drift on the machine hits both alike
            whole, stated = infer_once(model, photos, tmp / "out.csv", args.workers,
                                       args.batch_size)
            runs["infer"].append(whole)
            runs["infer rows"].append(stated)
            runs["ceiling"].append(ceiling(model, tmp / "tensors.npy", len(paths),
                                           args.workers, args.batch_size))
            print(f"round {r + 1}: infer {whole:,.1f} images/s (summary: {stated:,.1f}), "
                  f"ceiling {runs['ceiling'][-1]:,.1f} images/s", flush=True)
    best = {k: max(v) for k, v in runs.items()}
    med = {k: statistics.median(v) for k, v in runs.items()}
    print()
    print(f"{'':12s} {'best':>12s} {'median':>12s}   (images/s, {args.repeats} rounds)")
    for k in ("infer", "infer rows", "ceiling"):
        print(f"{k:12s} {best[k]:12,.1f} {med[k]:12,.1f}")
    for k in ("infer", "infer rows"):
        print(f"{k} / ceiling: {best[k] / best['ceiling']:.2f} (best), "
              f"{med[k] / med['ceiling']:.2f} (median)")


if __name__ == "__main__":
    main()
