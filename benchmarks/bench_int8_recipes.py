#!/usr/bin/env python
"""Search for an int8 recipe that earns its place: faster than the float copy at batch 32 and
above, with test accuracy within 0.2 points (issue 13).

    python benchmarks/bench_int8_recipes.py EXPORT_DIR [--rounds 6] [--slice 0.25]
        [--batches 1,32,512] [--work DIR] [--json out.json]

Every recipe is onnxruntime.quantization.quantize_static on EXPORT_DIR/model.onnx, calibrated
on the first 1,000 MNIST training images (as `digitkit export --quantize int8`), scored on
the whole test set, then timed against the float copy with 1 thread and with every core,
each configuration in its own process, interleaved (bench_ort_regimes.measure).
The recipes vary what the issue names: operator format (QDQ / QOperator), activation type
(int8 / uint8: x86's integer kernels are built for u8 x s8), per-channel weights, which ops
are quantized (only the weight ops; also Relu/MaxPool so the int8 chain is unbroken) and
which stay float (the first convolution, whose single input channel makes an int8 GEMM of
depth 9), plus ORT's quantization pre-processing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_ort_regimes import measure, table_rows  # noqa: E402

WEIGHT_OPS = ["Conv", "MatMul", "Gemm"]
CHAIN_OPS = WEIGHT_OPS + ["Relu", "MaxPool", "Reshape", "Transpose"]


def recipes(first_conv: str | None) -> dict[str, dict]:
    from onnxruntime.quantization import QuantFormat, QuantType

    qdq, qop = QuantFormat.QDQ, QuantFormat.QOperator
    s8, u8 = QuantType.QInt8, QuantType.QUInt8
    r = {
        "qdq-s8s8-pc-weightops (digitkit today)":
            dict(quant_format=qdq, activation_type=s8, per_channel=True, ops=WEIGHT_OPS),
        "qdq-u8s8-pc-weightops": dict(quant_format=qdq, activation_type=u8, per_channel=True,
                                      ops=WEIGHT_OPS),
        "qdq-u8s8-pc-chain": dict(quant_format=qdq, activation_type=u8, per_channel=True,
                                  ops=CHAIN_OPS),
        "qdq-s8s8-pc-chain": dict(quant_format=qdq, activation_type=s8, per_channel=True,
                                  ops=CHAIN_OPS),
        "qop-u8s8-pc-chain": dict(quant_format=qop, activation_type=u8, per_channel=True,
                                  ops=CHAIN_OPS),
        "qop-u8s8-tensor-chain": dict(quant_format=qop, activation_type=u8, per_channel=False,
                                      ops=CHAIN_OPS),
        "qdq-u8s8-pc-chain-preprocessed": dict(quant_format=qdq, activation_type=u8,
                                               per_channel=True, ops=CHAIN_OPS, pre=True),
    }
    if first_conv:
        r["qdq-u8s8-pc-chain-firstconv-float"] = dict(
            quant_format=qdq, activation_type=u8, per_channel=True, ops=CHAIN_OPS,
            exclude=[first_conv])
        r["qop-u8s8-pc-chain-firstconv-float"] = dict(
            quant_format=qop, activation_type=u8, per_channel=True, ops=CHAIN_OPS,
            exclude=[first_conv])
    return r


def quantize(src: Path, out: Path, calib: np.ndarray, recipe: dict, input_name: str) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calib[i:i + 100] for i in range(0, len(calib), 100))

        def get_next(self):
            b = next(self._it, None)
            return None if b is None else {input_name: b}

    model = src
    if recipe.get("pre"):
        from onnxruntime.quantization.shape_inference import quant_pre_process

        model = out.with_suffix(".pre.onnx")
        quant_pre_process(str(src), str(model))
    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(str(model), str(out), Reader(), quant_format=recipe["quant_format"],
                    per_channel=recipe["per_channel"], activation_type=recipe["activation_type"],
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    op_types_to_quantize=recipe["ops"],
                    nodes_to_exclude=recipe.get("exclude"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("export", type=Path)
    ap.add_argument("--data", default=str(HERE.parents[1] / "shared" / "data" / "mnist"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/digitkit-int8-recipes"))
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--slice", type=float, default=0.25)
    ap.add_argument("--batches", default="1,32,512")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--only", default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import onnx

    from digitkit.data import read_idx
    from digitkit.predictors.ort import OnnxPredictor

    src = args.export / "model.onnx"
    graph = onnx.load(str(src)).graph
    first_conv = next((n.name for n in graph.node if n.op_type == "Conv"), None)
    x_train, _ = read_idx(Path(args.data) / "train-images-idx3-ubyte.gz")
    x_test, _ = read_idx(Path(args.data) / "t10k-images-idx3-ubyte.gz")
    y_test, _ = read_idx(Path(args.data) / "t10k-labels-idx1-ubyte.gz")
    calib = x_train[:1000].astype(np.float32)
    args.work.mkdir(parents=True, exist_ok=True)

    def accuracy(path):
        p = OnnxPredictor(path)
        pred = np.concatenate([p.predict(x_test[i:i + 1000].astype(np.float32)).argmax(1)
                               for i in range(0, len(x_test), 1000)])
        return float(np.mean(pred == y_test))

    float_acc = accuracy(src)
    print(f"float: accuracy {100 * float_acc:.2f}%, {src.stat().st_size} bytes")
    chosen = {f"float t{t}": {"kind": "ort", "path": str(src), "threads": t, "spinning": t > 1}
              for t in sorted({1, args.cores})}
    found = {"float": {"accuracy": float_acc, "bytes": src.stat().st_size}}
    for name, recipe in recipes(first_conv).items():
        if args.only and not name.startswith(tuple(args.only.split(","))):
            continue
        out = args.work / (name.split(" ")[0] + ".onnx")
        try:
            quantize(src, out, calib, recipe, graph.input[0].name)
        except Exception as e:  # noqa: BLE001 - a recipe the quantizer refuses is a finding
            print(f"{name}: quantization failed: {str(e).splitlines()[0][:200]}")
            continue
        acc = accuracy(out)
        found[name] = {"accuracy": acc, "bytes": out.stat().st_size,
                       "drop_points": 100 * (float_acc - acc)}
        print(f"{name}: accuracy {100 * acc:.2f}% (drop {100 * (float_acc - acc):.2f} pt), "
              f"{out.stat().st_size} bytes", flush=True)
        for t in sorted({1, args.cores}):
            chosen[f"{name} t{t}"] = {"kind": "ort", "path": str(out), "threads": t,
                                      "spinning": t > 1}
    batches = [int(b) for b in args.batches.split(",")]
    slices = measure(chosen, args.export.parent.name, args, batches)
    print("\n| recipe | accuracy | drop pt | size KiB |\n|---|--:|--:|--:|")
    for name, f in found.items():
        print(f"| {name} | {100 * f['accuracy']:.2f}% | {f.get('drop_points', 0):.2f} | "
              f"{f['bytes'] / 1024:.0f} |")
    print("\n| model | configuration | " + " | ".join(f"b={b} img/s (others' load)"
                                                   for b in batches) + " |")
    print("|---|---|" + "--:|" * len(batches))
    print("\n".join(table_rows(args.export.parent.name, slices, batches)))
    if args.json:
        args.json.write_text(json.dumps({"recipes": found, "slices": slices, "argv": sys.argv},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
