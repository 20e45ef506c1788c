#!/usr/bin/env python
"""A 224x224x3 model on every runtime side by side, and `auto` on it (issue 20, "Real-size
models").

    python benchmarks/bench_realsize.py --photos 500 --duration 3 --repeat 3
    python benchmarks/bench_realsize.py --quick        # a small run that proves it works

--quick (40 photos, 40 training photos, bench --duration 0.5) took about 10 minutes on a busy
2-core machine (load average 7-10): building the model under TensorFlow, export's four
validated copies (about 3 minutes) and bench's one process per runtime (about 5; each
TensorFlow row loads TensorFlow) are most of it, so it cannot be made much shorter without
dropping rows. A quiet machine with more cores takes a fraction of that.

Steps, each printed with its command line:
1. Photos: scripts/make_image_set.py's crops of scikit-image's sample photos (nothing is
   downloaded), scaled to --long-side pixels and saved as JPEGs (quality 90), one folder per
   class (astronaut, brick, cat, coffee, coins): a training set (seed 1) and a labelled
   evaluation set (seed 0, other crops) that is export's and bench's --calibration folder and
   infer's input.
2. The model: `keras.applications` MobileNetV2 (--arch) built with weights=None (random
   weights, seeded; nothing is downloaded) behind a Rescaling layer, so it takes raw 0..255
   pixels. A random net's outputs are near-uniform, which would make every agreement figure
   (int8, bf16) meaningless, so before it is saved: its batch norms take the statistics of one
   batch of training photos (one forward pass in training mode with momentum 0, instead of
   the identity statistics of a fresh net), and a softmax head is fitted on the pooled
   features of the training photos (the backbone stays random). Measured while building this
   (200 training photos): training accuracy about 0.87, accuracy on the evaluation photos
   about 0.45-0.5 (chance: 0.2), mean top probability about 0.47: a random backbone's features
   tell these crops apart only weakly, so the outputs are far from uniform but their margins
   are modest, and int8 agreement here is a harder test than on a trained network. Saved as
   .keras with the general contract embedded (class names, 224x224x3, squash bilinear).
3. `digitkit export MODEL --format all --quantize int8 --calibration EVAL --out EXPORT
   --max-accuracy-drop 100`: SavedModel, ONNX, int8 ONNX (per-channel QDQ,
   calibrated on EVAL) and LiteRT copies, each validated against the Keras model. The int8
   copy is kept whatever accuracy it loses (--int8-max-drop) so that bench times it and
   states its agreement (bench flags it when it disagrees). On this random-backbone model it
   agreed with fp32 on 56-65% of export's parity inputs and on 33-40% of the 40 photos in
   bench (ORT int8; OpenVINO on the same copy) in the helper's --quick run: see
   BENCHMARKS.md (not investigated; the model may be the cause rather than export).
   Export's tolerance for a general classifier (--atol 1e-4) comes from this model: at the
   digit models' 1e-5 its fp32 ONNX and LiteRT copies failed on float rounding alone (max
   |diff| about 2e-5 on probabilities, every top-1 the same).
4. `digitkit bench EXPORT --calibration EVAL --batch-sizes 1,32`: every runtime row in one run,
   each in its own process, same threads, same images: ONNX Runtime fp32 and int8, OpenVINO
   fp32 and bf16 (bf16 only where the CPU has it natively; its row says why not otherwise),
   LiteRT, TensorFlow (SavedModel, tf.function, Keras predict), with accuracy on EVAL and
   top-1 agreement with the Keras model. Summarised below it as one table.
   OpenVINO on the int8 copy is not a row of digitkit's runtime table; it is timed here,
   labelled as outside `digitkit bench`, with the same predictor class and timing function
   bench uses (`OpenVinoPredictor` on model.int8.onnx, `predictors.timing.time_batch`).
5. `digitkit infer EXPORT EVAL -o OUT.csv --runtime auto --precision any` (with
   `--calibration EVAL` where `digitkit infer --help` offers that option): twice (the first
   calibrates, the second reads the cached choice), and `--runtime onnxruntime` beside it,
   whole processes: what auto chose and why (its stderr), and auto / ORT fp32. A run that
   fails is reported with its one-line error, and the benchmark goes on.

The infer pipeline against its per-stage ceiling on the same kind of photos is
benchmarks/bench_infer_general.py's question (one script per question).
The lead records figures on a quiet machine (BENCHMARKS.md, "A 224x224x3 model: every runtime
side by side"); figures from a busy one mean little, so the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "scripts"))

from bench_infer_general import CLASSES, SIZE, make_photos  # noqa: E402

ARCHS = ("mobilenetv2", "mobilenetv3small", "efficientnetb0")


def say(text: str = "") -> None:
    print(text, flush=True)


def command_line(cmd) -> str:
    return "$ " + " ".join(shlex.quote(str(a)) for a in cmd)


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "digitkit", *map(str, args)]


def run(cmd, echo_output: bool = True,
        may_fail: bool = False) -> tuple[subprocess.CompletedProcess, float]:
    """Run a command (printed first), its output shown; (result, wall seconds). A failure
    ends the benchmark unless `may_fail` (then the caller reports it)."""
    say(command_line(cmd))
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if echo_output:
        for line in (done.stdout + done.stderr).rstrip().splitlines():
            say("    " + line)
    if done.returncode not in (0, 4) and not may_fail:  # 4: a copy or row flagged, shown
        raise SystemExit(f"failed ({done.returncode}): {command_line(cmd)}")
    return done, wall


def build_model(arch: str, train_x: np.ndarray, train_y: np.ndarray, out: Path,
                seed: int) -> dict:
    """The seeded random-weight network, batch norms set from training photos, a fitted head;
    saved as .keras with the contract embedded. Returns what was done, for the report."""
    import keras

    from digitkit.model.contract import image_contract
    from digitkit.model.embedded import write_contract

    keras.utils.set_random_seed(seed)
    build = {"mobilenetv2": keras.applications.MobileNetV2,
             "mobilenetv3small": keras.applications.MobileNetV3Small,
             "efficientnetb0": keras.applications.EfficientNetB0}[arch]
    kw = {"include_preprocessing": False} if arch == "mobilenetv3small" else {}
    base = build(input_shape=(SIZE, SIZE, 3), weights=None, include_top=False, pooling="avg",
                 **kw)
    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    # Keras' "tf" mode ([-1, 1]) inside the graph: the model takes raw 0..255 pixels.
    features = base(keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs))
    backbone = keras.Model(inputs, features)
    norms = [layer for layer in base.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0  # the moving statistics become this batch's
    calib = train_x[np.random.default_rng(seed).permutation(len(train_x))[:32]]
    backbone(calib, training=True)
    for layer, m in zip(norms, saved, strict=True):
        layer.momentum = m
    feats = backbone.predict(train_x, batch_size=32, verbose=0)
    head = keras.layers.Dense(len(CLASSES), activation="softmax", name="probabilities",
                              kernel_regularizer=keras.regularizers.l2(1e-3))
    fit = keras.Sequential([keras.Input(feats.shape[1:]), head])
    fit.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                metrics=["accuracy"])
    hist = fit.fit(feats, train_y, epochs=200, batch_size=len(feats), verbose=0)
    model = keras.Model(inputs, head(features))
    model.save(out)
    write_contract(out, image_contract(SIZE, SIZE, 3, CLASSES))
    return {"batch_norms": len(norms), "features": int(feats.shape[1]),
            "train_accuracy": float(hist.history["accuracy"][-1]),
            "train_loss": float(hist.history["loss"][-1])}


def openvino_int8(exported: Path, x: np.ndarray, labels: np.ndarray, batches, threads: int,
                  duration: float) -> dict:
    """OpenVINO (f32 hint; the QDQ pairs run as int8 by its low-precision transformations) on
    the int8 copy, timed as bench times a row: the same predictor class and timing function,
    agreement with ONNX Runtime fp32 on the same images by the same rule. Outside `digitkit
    bench`: its runtime table has no such row."""
    from digitkit.predictors.compare import agreement
    from digitkit.predictors.openvino import OpenVinoPredictor
    from digitkit.predictors.ort import OnnxPredictor, regime_settings
    from digitkit.predictors.timing import time_batch

    def classify(p):
        return np.concatenate([p.predict(x[i:i + 32]) for i in range(0, len(x), 32)])

    ref = classify(OnnxPredictor(exported / "model.onnx", regime_settings(32, threads)).load())
    p = OpenVinoPredictor(exported / "model.int8.onnx", threads=threads).load()
    probs = classify(p)
    out = {"top1_agreement": agreement(probs, ref).top1_fraction,
           "accuracy": float(np.mean(probs.argmax(1) == labels))}
    for b in batches:
        out[b] = time_batch(p.predict, x, b, warmup=5, duration=duration, iterations=None)
    return out


def summary(bench: dict, batches, ov_int8: dict | None) -> None:
    """bench's rows (and OpenVINO int8, labelled) as one compact table."""
    m = bench["models"][0]
    say()
    head = f"{'runtime':24s} {'precision':9s} {'accuracy':>9s} {'agree':>8s}" + "".join(
        f" {'b' + str(b) + ' img/s':>12s}" for b in batches)
    say(head)
    for name, r in m["results"].items():
        c = r["check"]
        agree = ("ref" if name == m["reference"] else "-" if c.get("top1_agreement") is None
                 else f"{100 * c['top1_agreement']:.1f}%")
        acc = "-" if c.get("accuracy") is None else f"{100 * c['accuracy']:.1f}%"
        rates = "".join(f" {pb['images_per_s']:12,.1f}" for pb in r["per_batch"])
        say(f"{name:24s} {bench['engines'][name]['precision']:9s} {acc:>9s} {agree:>8s}{rates}")
    if ov_int8 is not None:
        rates = "".join(f" {ov_int8[b]['images_per_s']:12,.1f}" for b in batches)
        say(f"{'openvino on int8 copy*':24s} {'int8':9s} {100 * ov_int8['accuracy']:8.1f}% "
            f"{100 * ov_int8['top1_agreement']:7.1f}%{rates}")
        say("  * outside `digitkit bench` (no such row in its runtime table); same predictor "
            "class and timing; agreement with onnxruntime fp32, not with the reference")
    for name, why in bench.get("unavailable", {}).items():
        say(f"{name:24s} not run: {why}")
    say(f"reference for agreement: {m['reference']}; accuracy on the --calibration photos")


def main(argv=None) -> None:
    from digitkit.environment import usable_cpus

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=500,
                    help="evaluation photos (the --calibration folder and infer's input)")
    ap.add_argument("--train-photos", type=int, default=200,
                    help="training photos for the batch norms and the head")
    ap.add_argument("--arch", choices=ARCHS, default="mobilenetv2")
    ap.add_argument("--long-side", type=int, default=480)
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--duration", type=float, default=3.0, help="bench --duration")
    ap.add_argument("--repeat", type=int, default=1, help="bench --repeat")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--int8-max-drop", type=float, default=100.0,
                    help="export --max-accuracy-drop: by default the int8 copy is kept "
                         "whatever it loses, so that bench times it and states its agreement")
    ap.add_argument("--atol", type=float, default=None,
                    help="export --atol [default: export's own for a general classifier]")
    ap.add_argument("--work", type=Path, help="keep everything here (default: a temp folder)")
    ap.add_argument("--quick", action="store_true",
                    help="40 photos, 40 training photos, bench --duration 0.5: proves it runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.photos, args.train_photos, args.duration, args.repeat = 40, 40, 0.5, 1
    say(command_line([sys.executable, *sys.argv]))
    from digitkit.bench.report import BENCH_PACKAGES
    from digitkit.environment import cpu_model, library_versions

    say(f"load average: {', '.join(f'{v:.2f}' for v in os.getloadavg())} "
        f"({os.cpu_count()} CPUs; figures under load are not quiet ones)")
    say(f"cpu: {cpu_model()}, {usable_cpus()} usable; "
        + ", ".join(f"{k} {v}" for k, v in library_versions(BENCH_PACKAGES).items()))
    os.environ.setdefault("DIGITKIT_CACHE", tempfile.mkdtemp(prefix="digitkit-realsize-cache-"))
    batches = [int(b) for b in args.batch_sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="digitkit-realsize-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        evaluation = work / "photos"
        train = work / "train"
        make_photos(evaluation, args.photos, args.long_side, seed=0)
        make_photos(train, args.train_photos, args.long_side, seed=1)
        per_class = -(-args.photos // len(CLASSES))
        say(f"photos: {per_class * len(CLASSES)} evaluation JPEGs ({evaluation}), "
            f"{-(-args.train_photos // len(CLASSES)) * len(CLASSES)} training JPEGs, long side "
            f"{args.long_side} px ({time.perf_counter() - t0:.0f} s)")

        from digitkit.images.labelled import load_labelled
        from digitkit.images.pixels import PolicyDecoder
        from digitkit.model.contract import image_contract

        contract = image_contract(SIZE, SIZE, 3, CLASSES)
        decode = PolicyDecoder(contract.pixel_policy)
        tr = load_labelled(train, decode, CLASSES)
        ev = load_labelled(evaluation, decode, CLASSES)

        model = work / f"{args.arch}.keras"
        t0 = time.perf_counter()
        built = build_model(args.arch, tr.pixels, tr.labels, model, args.seed)
        say(f"model: {args.arch}, random weights (seed {args.seed}), {built['batch_norms']} "
            f"batch norms set from 32 training photos, softmax head fitted on "
            f"{built['features']} pooled features: training accuracy "
            f"{built['train_accuracy']:.3f}, loss {built['train_loss']:.3f}; "
            f"{model.stat().st_size / 1e6:.1f} MB ({time.perf_counter() - t0:.0f} s)")

        exported = work / "export"
        done, wall = run(cli("export", model, "--format", "all", "--quantize", "int8",
                             "--calibration", evaluation, "--out", exported,
                             "--max-accuracy-drop", args.int8_max_drop,
                             *(("--atol", args.atol) if args.atol is not None else ())))
        say(f"export: {wall:.0f} s, exit {done.returncode}; files: "
            + ", ".join(sorted(p.name for p in exported.iterdir())))
        int8 = (exported / "model.int8.onnx").exists()
        if not int8:
            say("export made no int8 copy (see its output above)")

        record = work / "bench.json"
        done, wall = run(cli("bench", exported, "--calibration", evaluation, "--batch-sizes",
                             args.batch_sizes, "--duration", args.duration, "--repeat",
                             args.repeat, "--json", record))
        say(f"bench: {wall:.0f} s, exit {done.returncode}")
        ov_int8 = None
        if int8:
            try:
                ov_int8 = openvino_int8(exported, ev.pixels, ev.labels, batches,
                                        usable_cpus(), args.duration)
            except ImportError:
                say("openvino on the int8 copy: openvino not installed")
        summary(json.loads(record.read_text()), batches, ov_int8)

        say()
        out = work / "out.csv"
        # auto holds every copy to the fp32 reference on its check images; where infer has a
        # --calibration option (a labelled folder for a general model's gate), auto gets the
        # evaluation photos; where it has none, auto runs as it is and what it does is shown.
        helptext = subprocess.run(cli("infer", "--help"), capture_output=True, text=True).stdout
        auto = ("--runtime", "auto", "--precision", "any")
        if "--calibration DIR" in helptext:
            auto += ("--calibration", str(evaluation))
        else:
            say("infer has no --calibration option here: auto runs with its own check images")
        rows = {}
        for label, flags in (("auto (first: calibrates)", auto), ("auto (cached choice)", auto),
                             ("onnxruntime fp32", ("--runtime", "onnxruntime"))):
            out.unlink(missing_ok=True)
            done, wall = run(cli("infer", exported, evaluation, "-o", out, *flags),
                             may_fail=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
                rows[label] = (wall, None, f"exit {done.returncode}: {last}")
                continue
            n = sum(1 for _ in out.open(encoding="utf-8")) - 1
            chose = next((line.strip() for line in reversed(done.stderr.splitlines())
                          if "--runtime auto" in line), "")
            rows[label] = (wall, n, chose)
        say()
        say(f"{'infer, whole process':28s} {'s':>8s} {'images/s':>10s}  note")
        for label, (wall, n, note) in rows.items():
            rate = "-" if n is None else f"{n / wall:10.1f}"
            say(f"{label:28s} {wall:8.2f} {rate:>10s}  {note[:140]}")
        ort, cached = rows["onnxruntime fp32"], rows["auto (cached choice)"]
        if ort[1] is not None and cached[1] is not None:
            say(f"auto (cached) / onnxruntime fp32: {ort[0] / cached[0]:.2f} (whole process, "
                f"start-up included, {ort[1]} photos)")
        say(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
