#!/usr/bin/env python
"""What fitting a model's normalisation (digitkit.model.fitting, issue 23) adds to `export`
and to `infer`'s first start, and what later starts pay once it is cached.

    python benchmarks/bench_fit.py [--data DIR] [--runs 3] [--images 200] [--keras]
    python benchmarks/bench_fit.py --rgb [--runs 3]

The model is an MNIST MLP trained here (numpy, one epoch) on (x/255 - 0.2)/0.45, constants
no preset has, written as an NCHW ONNX file (what a PyTorch tutorial exports); with --keras
also a small Keras convnet trained on the same constants (TensorFlow needed), whose passes
cost more. For each model, whole processes as a user runs them, each run interleaved:

  export, fitted     `digitkit export --format onnx` with nothing declared, a fresh cache:
                     detection + the fit + the export
  export, declared   the same with --input-scale standardized --input-mean 0.2
                     --input-std 0.45: no detection, no fit (the floor)
  infer, first start `digitkit infer` over --images MNIST PNGs, a fresh cache: detection, the
                     fit, the adapted copy written, the images classified
  infer, cached      the same again on that cache: detection, the fit read back

and, in process, the fit alone (`refine` on the detection sample, fresh cache) with its passes
over the calibration images, beside detection alone. Medians of --runs.

--rgb: the fit of per-channel constants (six, against the gray model's two), in process
only: the RGB model of tests/test_model_fitting_rgb.py (a linear classifier of 8x8 colour
photo crops trained on (x/255 - (0.50,0.42,0.33))/(0.27,0.22,0.26), an NCHW ONNX with
logits) on its 2,000 calibration crops; detection, the fit (fresh cache each run) and the fit
read back.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
MEAN, STD = 0.2, 0.45


def _mnist(data):
    from digitkit.data import load_mnist

    return load_mnist(data)


def _onnx_model(mnist, out: Path) -> Path:
    from _foreign_models import train_numpy_mlp, write_nchw_onnx

    x = (mnist.x_train.astype(np.float32) / 255 - MEAN) / STD
    return write_nchw_onnx(out / "mlp_fit.onnx", train_numpy_mlp(x, mnist.y_train, steps=100))


def _keras_model(mnist, out: Path) -> Path:
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(28, 28, 1)),
                              layers.Conv2D(8, 3, activation="relu"), layers.MaxPooling2D(2),
                              layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(2),
                              layers.Flatten(), layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    x = ((mnist.x_train[:20000].astype(np.float32) / 255 - MEAN) / STD)[..., None]
    model.fit(x, mnist.y_train[:20000], epochs=1, batch_size=128, verbose=0)
    path = out / "convnet_fit.keras"
    model.save(path)
    return path


def _run(args, cache: Path) -> tuple[float, str]:
    env = dict(os.environ, DIGITKIT_CACHE=str(cache))
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "digitkit", *map(str, args)], env=env,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, args))}\n{done.stdout}{done.stderr}")
    return elapsed, done.stdout + done.stderr


def _in_process(model: Path, mnist, cache: Path) -> dict:
    from digitkit.model.detect import (
        DEFAULT_DETECTION_IMAGES,
        detect_convention,
        detection_sample,
    )
    from digitkit.model.fitting import refine
    from digitkit.predictors.adapted import open_source

    os.environ["DIGITKIT_CACHE"] = str(cache)
    source = open_source(model)
    t = time.perf_counter()
    detection = detect_convention(source, mnist.x_test, mnist.y_test)
    t_detect = time.perf_counter() - t
    x, y = detection_sample(mnist.x_test, mnist.y_test, DEFAULT_DETECTION_IMAGES)
    t = time.perf_counter()
    fitted = refine(source, detection, x, y)
    t_fit = time.perf_counter() - t
    t = time.perf_counter()
    again = refine(source, detection, x, y)
    t_cached = time.perf_counter() - t
    assert again.fit.cached
    return {"detect": t_detect, "fit": t_fit, "fit cached": t_cached,
            "passes": fitted.fit.passes, "line": fitted.summary()}


def _rgb(runs: int) -> None:
    import test_model_fitting_rgb as t
    from _general_models import photo_crops, write_labelled_pngs
    from digitkit.model.detect import detect_convention, load_calibration
    from digitkit.model.fitting import refine
    from digitkit.predictors.adapted import load_source

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path, _ = t._train(t.TRUE_MEAN, t.TRUE_STD, tmp, "rgb_fit")
        folder = write_labelled_pngs(tmp / "calibration",
                                     *photo_crops(t.CALIBRATION, 1, t.SIZE), t.NAMES)
        source = load_source(path, calibration=folder).source
        cal = load_calibration(source.contract, folder)
        x, y = cal.pixels, cal.labels
        rows: dict[str, list[float]] = {}
        for run in range(runs):
            os.environ["DIGITKIT_CACHE"] = str(tmp / f"cache-{run}")
            start = time.perf_counter()
            detection = detect_convention(source, x, y)
            rows.setdefault("detection", []).append(time.perf_counter() - start)
            start = time.perf_counter()
            fitted = refine(source, detection, x, y)
            rows.setdefault("the fit", []).append(time.perf_counter() - start)
            start = time.perf_counter()
            assert refine(source, detection, x, y).fit.cached
            rows.setdefault("the fit read back", []).append(time.perf_counter() - start)
        print(f"\nrgb: {fitted.summary()}")
        print(f"  the fit: {fitted.fit.passes:.0f} passes over {len(x):,} images")
        for label, times in rows.items():
            print(f"  {label:<18} {statistics.median(times):8.3f} s  "
                  + " ".join(f"{v:.3f}" for v in times))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--keras", action="store_true")
    ap.add_argument("--rgb", action="store_true")
    args = ap.parse_args(argv)
    print("$ " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), flush=True)
    if args.rgb:
        return _rgb(args.runs)

    from digitkit.data import write_png_folder

    mnist = _mnist(args.data)
    data = ["--data", args.data] if args.data else []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pngs = tmp / "pngs"
        write_png_folder(mnist.x_test[: args.images], mnist.y_test[: args.images], pngs)
        models = [_onnx_model(mnist, tmp)]
        if args.keras:
            models.append(_keras_model(mnist, tmp))
        for model in models:
            rows: dict[str, list[float]] = {}
            for run in range(args.runs):
                cache = tmp / f"cache-{model.stem}-{run}"
                out = tmp / f"export-{model.stem}-{run}"
                t, text = _run(["export", model, "--out", out, "--format", "onnx", *data],
                               cache)
                rows.setdefault("export, fitted", []).append(t)
                if run == 0:
                    fitted_line = next(line for line in text.splitlines()
                                       if "fitted" in line)
                t, _ = _run(["export", model, "--out", f"{out}-declared", "--format", "onnx",
                             "--input-scale", "standardized", "--input-mean", str(MEAN),
                             "--input-std", str(STD), *data], tmp / f"cache-declared-{run}")
                rows.setdefault("export, declared", []).append(t)
                infer_cache = tmp / f"cache-infer-{model.stem}-{run}"
                for label in ("infer, first start", "infer, cached"):
                    t, _ = _run(["infer", model, pngs, "-o", tmp / f"r-{run}-{label[7]}.csv",
                                 "--force", "-q", *data], infer_cache)
                    rows.setdefault(label, []).append(t)
            inproc = _in_process(model, mnist, tmp / f"cache-inproc-{model.stem}")
            print(f"\n{model.name}: {fitted_line.strip()}")
            print(f"  {'whole process':<22} {'median s':>9}  runs")
            for label, times in rows.items():
                print(f"  {label:<22} {statistics.median(times):9.2f}  "
                      + " ".join(f"{v:.2f}" for v in times))
            print(f"  in process: detection {inproc['detect']:.2f} s; the fit "
                  f"{inproc['fit']:.2f} s ({inproc['passes']:.0f} passes over "
                  f"{2000:,} images); the fit read from the cache {inproc['fit cached']:.3f} s")


if __name__ == "__main__":
    main()
