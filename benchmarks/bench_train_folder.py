"""Training throughput on a labelled folder: `digitkit train DIR` against Keras' own recipe
(`keras.utils.image_dataset_from_directory` + `fit`) on the same folder, architecture, input
size, batch size, optimiser, epochs and validation fraction. Target: digitkit >= 1x.

The folder is built from the photos that ship inside scikit-image (`scripts/make_image_set.py`'s
classes and crops; nothing is downloaded), scaled to a long side of --long-side pixels (512: a
small photo; what a folder of pictures usually holds, unlike 28x28 digits) and stored as plain
RGB JPEGs so that Keras' loader reads every file (it takes only JPEG, PNG, BMP and GIF); or pass
--folder DIR of your own.

Each side runs in a fresh process. Training images/s = training images x epochs / seconds
from the first file read to the end of the last epoch (interpreter start and TensorFlow's
import excluded on both sides; digitkit's parallel decode included). Keras runs twice: as the
documentation's plain recipe, and with `.cache().prefetch()` (the tutorial's faster variant).
Augmentation is off on both sides (the plain recipe has none), and both run with TensorFlow's
op determinism on, as `digitkit train` always does (--keras-nondeterministic turns it off on
the Keras side), so what differs is the input pipeline alone.

    python benchmarks/bench_train_folder.py [--per-class 200] [--size 64x64] [--epochs 3]
        [--long-side 512] [--folder DIR] [--arch small-cnn] [--batch-size 32] [--repeats 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The Keras side, run with: python -c KERAS_SIDE folder H W epochs batch arch seed cache det
KERAS_SIDE = r"""
import json, sys, time
folder, h, w, epochs, batch, arch, seed, cache, det = sys.argv[1:]
h, w, epochs, batch, seed = int(h), int(w), int(epochs), int(batch), int(seed)
import keras, tensorflow as tf
from digitkit.architectures import TABLE, build_model, compile_model
keras.utils.set_random_seed(seed)
if det == "det":
    tf.config.experimental.enable_op_determinism()
t0 = time.perf_counter()
train, val = keras.utils.image_dataset_from_directory(
    folder, validation_split=0.2, subset="both", seed=seed, image_size=(h, w),
    batch_size=batch, color_mode="rgb", verbose=False)
names = train.class_names
if cache == "cache":
    train = train.cache().prefetch(tf.data.AUTOTUNE)
    val = val.cache().prefetch(tf.data.AUTOTUNE)
model = build_model(arch, (h, w, 3), len(names), "none")
steps = int(tf.data.experimental.cardinality(train))
compile_model(model, TABLE[arch].defaults["learning_rate"], steps, epochs)
hist = model.fit(train, validation_data=val, epochs=epochs, verbose=0)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "steps": steps,
                  "val_accuracy": float(hist.history["val_accuracy"][-1])}))
"""


def build_folder(out: Path, per_class: int, seed: int, long_side: int = 512) -> int:
    """scripts/make_image_set.py's classes and crops at a long side of `long_side` pixels,
    stored as RGB JPEGs (quality 90)."""
    spec = importlib.util.spec_from_file_location("make_image_set",
                                                  REPO / "scripts" / "make_image_set.py")
    mis = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mis)
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    n = 0
    for name, source in mis.CLASSES.items():
        src = mis.photo(source)
        (out / name).mkdir(parents=True)
        for i in range(per_class):
            im = mis._variant(src, rng).convert("RGB")
            k = long_side / max(im.size)
            im = im.resize((round(im.width * k), round(im.height * k)), Image.BICUBIC)
            im.save(out / name / f"{i:04d}.jpg", quality=90)
            n += 1
    return n


def run_digitkit(folder, h, w, args) -> dict:
    digitkit = Path(sys.executable).with_name("digitkit")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(digitkit), "train", str(folder), "--arch", args.arch, "--input-size",
               f"{h}x{w}", "--channels", "3", "--epochs", str(args.epochs), "--batch-size",
               str(args.batch_size), "--val-fraction", "0.2", "--no-augment", "--seed",
               str(args.seed), "--quiet", "--out", tmp]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        rec = json.loads((Path(tmp) / "train.json").read_text())
    seconds = rec["data"]["cache"]["decode_seconds"] + rec["fit_seconds"]
    return {"seconds": seconds, "wall": wall, "train_images": rec["data"]["train_images"],
            "val_accuracy": rec["history"]["val_accuracy"][-1],
            "decode_seconds": rec["data"]["cache"]["decode_seconds"]}


def run_keras(folder, h, w, args, cache: bool) -> dict:
    cmd = [sys.executable, "-c", KERAS_SIDE, str(folder), str(h), str(w), str(args.epochs),
           str(args.batch_size), args.arch, str(args.seed), "cache" if cache else "plain",
           "nodet" if args.keras_nondeterministic else "det"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    wall = time.perf_counter() - t0
    return {**json.loads(out.strip().splitlines()[-1]), "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", default=None, help="a labelled folder of your own")
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--long-side", type=int, default=512)
    ap.add_argument("--keras-nondeterministic", action="store_true")
    ap.add_argument("--size", default="64x64")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--arch", default="small-cnn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="runs per side, interleaved")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))

    print(f"command: {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder) if args.folder else Path(tmp) / "set"
        if not args.folder:
            n = build_folder(folder, args.per_class, args.seed, args.long_side)
            print(f"folder: {n} RGB JPEGs, long side {args.long_side}, {args.per_class} per "
                  f"class of scripts/make_image_set.py's 5 classes")
        rows: dict[str, list[dict]] = {"digitkit": [], "keras": [], "keras+cache": []}
        for _ in range(args.repeats):
            rows["digitkit"].append(run_digitkit(folder, h, w, args))
            rows["keras"].append(run_keras(folder, h, w, args, cache=False))
            rows["keras+cache"].append(run_keras(folder, h, w, args, cache=True))
    n_train = rows["digitkit"][0]["train_images"]
    print(f"{args.arch} at {h}x{w}x3, {args.epochs} epochs of batch {args.batch_size}, "
          f"{n_train} training images, no augmentation")
    print(f"{'pipeline':<14} {'images/s':>10} {'seconds':>9} {'process s':>10} {'val acc':>8}")
    best = {}
    for name, runs in rows.items():
        s = min(r["seconds"] for r in runs)
        best[name] = n_train * args.epochs / s
        print(f"{name:<14} {best[name]:>10.1f} {s:>9.2f} {min(r['wall'] for r in runs):>10.2f} "
              f"{runs[-1]['val_accuracy']:>8.3f}")
    for other in ("keras", "keras+cache"):
        print(f"digitkit / {other}: {best['digitkit'] / best[other]:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": rows,
                                               "images_per_second": best}, indent=1) + "\n")


if __name__ == "__main__":
    main()
