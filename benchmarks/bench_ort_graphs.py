#!/usr/bin/env python
"""Offline rewrites of an exported ONNX graph, timed on ONNX Runtime against LiteRT (issue 13:
"where a peer still wins, try what ORT offers ... an offline-optimised model").

    python benchmarks/bench_ort_graphs.py EXPORT_DIR [EXPORT_DIR...] [--rounds 6]
        [--slice 0.25] [--batches 1,32,512] [--cores 2] [--work /tmp/digitkit-ort-graphs]

For each export directory (`digitkit export --format all`: model.onnx and model.tflite), the
variants below are written next to each other under --work, checked (onnx.checker, outputs on
the 10,000 test images within 2e-6 of model.onnx, same labels), then timed each in its own
process, interleaved slices, best slice kept (the method of bench_ort_regimes.py, whose
`measure` this reuses), at 1 and --cores threads with digitkit's regime settings:
- `as exported`: the ONNX `digitkit export` writes (tf2onnx, opset 17);
- `flatten`: a Reshape whose target shape is computed from a Shape node at run time (tf2onnx's
  Keras Flatten: Shape, Gather, Cast, Slice, Concat, Cast) replaced by one Flatten(axis=1);
- for a graph whose input goes through an L2 normalisation along axis 1 (the seed MLP: Mul,
  ReduceSum, Sqrt, Reciprocal, Min, broadcast Mul):
  `lpnorm` (ONNX LpNormalization, axis 1), `lpnorm-last` (the input transposed so the norm runs
  along the last axis, the first layer's weight rows permuted to match), `expand` (the
  broadcast Mul of (N,28,28) by (N,1,28), ORT's slowest kernel here, replaced by Expand to the
  full shape and an elementwise Mul).
Also printed: whether the CPU provider has float NHWC convolution kernels at all (without
them an NHWC graph is transposed back to NCHW by ORT's optimiser). ORT's own offline
optimisation, `optimized_model_filepath`, saves the graph it builds online anyway: it
shortens loading, not a run, so it is not a variant here. Prints a table of images/s per
variant and LiteRT's, and each variant's ratio to LiteRT.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ort_regimes  # noqa: E402

EPS2 = 1e-12  # TensorFlow's l2_normalize epsilon on the squared sum


def _model(onnx, graph_nodes, src, initializers):
    from onnx import helper

    used = {i for n in graph_nodes for i in n.input}
    inits = [i for i in initializers if i.name in used]
    g = helper.make_graph(graph_nodes, src.graph.name, src.graph.input, src.graph.output, inits)
    m = helper.make_model(g, opset_imports=src.opset_import)
    m.ir_version = src.ir_version
    onnx.checker.check_model(m, full_check=True)
    return m


def flatten_variant(onnx, src):
    """Reshapes fed by a run-time shape computation -> Flatten(axis=1); None if none."""
    from onnx import helper

    producers = {o: n for n in src.graph.node for o in n.output}
    inits = {i.name for i in src.graph.initializer}
    shape_ops = {"Shape", "Gather", "Cast", "Slice", "Concat", "Unsqueeze", "Squeeze",
                 "Constant"}
    dead, swap = set(), {}
    for n in src.graph.node:
        if n.op_type != "Reshape" or n.input[1] in inits:
            continue
        chain, stack = [], [n.input[1]]
        while stack:
            p = producers.get(stack.pop())
            if p is None:
                continue
            if p.op_type not in shape_ops:
                chain = None
                break
            chain.append(p)
            if p.op_type != "Shape":  # a Shape reads only its input's dimensions
                stack.extend(i for i in p.input if i not in inits)
        if chain and any(p.op_type == "Shape" for p in chain):
            dead.update(id(p) for p in chain)
            swap[id(n)] = helper.make_node("Flatten", [n.input[0]], [n.output[0]], axis=1)
    if not swap:
        return None
    nodes = [swap.get(id(n), n) for n in src.graph.node if id(n) not in dead]
    return _model(onnx, nodes, src, src.graph.initializer)


def _l2_block(src):
    """(index of the first node after the input's L2 normalisation, its output name), or
    None: the nodes before the first Reshape/Flatten must all be the normalisation's."""
    ops = [n.op_type for n in src.graph.node]
    for i, op in enumerate(ops):
        if op in ("Reshape", "Flatten"):
            if {"ReduceSum", "Sqrt"} <= set(ops[:i]):
                return i, src.graph.node[i].input[0]
            return None
    return None


def l2_variants(onnx, src) -> dict:
    from onnx import helper, numpy_helper

    block = _l2_block(src)
    if block is None:
        return {}
    cut, out = block
    x = src.graph.input[0].name
    rest, inits = list(src.graph.node[cut:]), list(src.graph.initializer)
    eps = numpy_helper.from_array(np.array(EPS2, np.float32), "bench_eps2")
    v = {"lpnorm": _model(onnx, [helper.make_node("LpNormalization", [x], [out], axis=1, p=2)]
                          + rest, src, inits)}
    v["expand"] = _model(onnx, [
        helper.make_node("Mul", [x, x], ["bench_sq"]),
        helper.make_node("ReduceSum", ["bench_sq", "bench_axis1"], ["bench_ss"], keepdims=1),
        helper.make_node("Max", ["bench_ss", "bench_eps2"], ["bench_ssm"]),
        helper.make_node("Sqrt", ["bench_ssm"], ["bench_n"]),
        helper.make_node("Reciprocal", ["bench_n"], ["bench_inv"]),
        helper.make_node("Shape", [x], ["bench_shape"]),
        helper.make_node("Expand", ["bench_inv", "bench_shape"], ["bench_invx"]),
        helper.make_node("Mul", [x, "bench_invx"], [out])] + rest, src,
        inits + [eps, numpy_helper.from_array(np.array([1], np.int64), "bench_axis1")])
    # Normalise along the last axis instead: transpose the input, permute the first layer's
    # weight rows to the transposed flattening.
    first = next(n for n in rest if n.op_type in ("MatMul", "Gemm"))
    w_name = first.input[1]
    w = numpy_helper.to_array(next(i for i in inits if i.name == w_name))
    side = int(round(np.sqrt(w.shape[0])))
    wp = w.reshape(side, side, -1).transpose(1, 0, 2).reshape(w.shape)
    inits_t = [numpy_helper.from_array(wp, w_name) if i.name == w_name else i for i in inits]
    v["lpnorm-last"] = _model(onnx, [
        helper.make_node("Transpose", [x], ["bench_xt"], perm=[0, 2, 1]),
        helper.make_node("LpNormalization", ["bench_xt"], [out], axis=2, p=2)] + rest,
        src, inits_t)
    return v


def nhwc_kernels() -> str:
    """Whether this ONNX Runtime's CPU provider has channels-last float convolutions (the
    contrib ops its NHWC layout transformer would use), tried on a one-node model."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((16, 1, 3, 3), np.float32), "w")
    found = []
    for op in ("NhwcConv", "NhwcFusedConv"):
        g = helper.make_graph(
            [helper.make_node(op, ["x", "w"], ["y"], domain="com.microsoft", kernel_shape=[3, 3])],
            "nhwc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 28, 28, 1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                                helper.make_opsetid("com.microsoft", 1)])
        try:
            ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            found.append(f"{op}: available")
        except Exception as e:  # noqa: BLE001 - ORT's NOT_IMPLEMENTED
            found.append(f"{op}: {str(e).split(' : ')[-1].split(' node')[0]}")
    return f"onnxruntime {ort.__version__} CPU provider, float NHWC kernels: " + "; ".join(found)


def write_variants(export: Path, tag: str, work: Path, x: np.ndarray) -> dict[str, str]:
    import onnx

    from digitkit.predictors.ort import OnnxPredictor

    src_path = export / "model.onnx"
    src = onnx.load(src_path)
    work.mkdir(parents=True, exist_ok=True)
    paths = {"as exported": str(src_path)}
    made = {"flatten": flatten_variant(onnx, src), **l2_variants(onnx, src)}
    for name, model in made.items():
        if model is not None:
            onnx.save(model, work / f"{name}.onnx")
            paths[name] = str(work / f"{name}.onnx")
    ref = OnnxPredictor(src_path).predict(x)
    for name, p in paths.items():
        got = OnnxPredictor(p).predict(x)
        diff = float(np.abs(got - ref).max())
        same = float((got.argmax(1) == ref.argmax(1)).mean())
        print(f"  {tag}/{name}: max |diff| {diff:.1e} over {len(x):,} test images, "
              f"labels {100 * same:.2f} % the same")
        if diff > 2e-6 or same < 1.0:
            sys.exit(f"{name} does not compute what model.onnx computes")
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("exports", nargs="+", type=Path)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" /
                                          "data" / "mnist"))
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--slice", type=float, default=0.25, help="seconds per timed slice")
    ap.add_argument("--batches", default="1,32,512")
    ap.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--work", type=Path, default=Path("/tmp/digitkit-ort-graphs"))
    args = ap.parse_args()
    print("$ python " + " ".join(sys.argv))
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}, {args.cores} cores, load average "
          f"{os.getloadavg()}")
    print(nhwc_kernels())
    from digitkit.data import read_idx

    x = read_idx(Path(args.data) / "t10k-images-idx3-ubyte.gz")[0].astype(np.float32)
    batches = [int(b) for b in args.batches.split(",")]
    lines = ["| model | configuration | " + " | ".join(f"b={b} img/s" for b in batches)
             + " | " + " | ".join(f"b={b} / LiteRT" for b in batches) + " |",
             "|---|---|" + "--:|" * 2 * len(batches)]
    for export in args.exports:
        tag = bench_ort_regimes.label(export)
        paths = write_variants(export, tag, args.work / tag, x)
        chosen = {}
        for t in sorted({1, args.cores}):
            for name, p in paths.items():
                chosen[f"{name}, {t} thread(s)"] = {"kind": "ort-regime", "path": p, "threads": t}
            chosen[f"LiteRT, {t} thread(s)"] = {"kind": "litert", "threads": t,
                                                "path": str(export / "model.tflite")}
        slices = bench_ort_regimes.measure(chosen, tag, args, batches)
        best = {n: {b: max(ips for ips, _ in s[b]) for b in batches} for n, s in slices.items()}
        for name, per_b in best.items():
            peer = best[f"LiteRT, {name.rsplit(', ', 1)[1]}"]
            lines.append(f"| {tag} | {name} | "
                         + " | ".join(f"{per_b[b]:,.0f}" for b in batches) + " | "
                         + " | ".join(f"{per_b[b] / peer[b]:.2f}x" for b in batches) + " |")
        print(json.dumps({"model": tag, "best_images_per_s": best}))
    print(f"\nload average at the end {os.getloadavg()}; best slice of {args.rounds} per "
          "configuration, each in its own process:")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
