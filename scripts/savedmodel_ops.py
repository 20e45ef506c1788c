"""Generate src/digitkit/model/savedmodel_ops.py: the ops a SavedModel may run without
--trust-model (digitkit.model.safety).

The list is the union of two sources, each op registered in the installed TensorFlow:
- every TensorFlow op tf2onnx can convert to ONNX: ONNX has no file, network or process
  operators, so an op tf2onnx can express in ONNX computes on tensors (less the queue and
  iterator ops tf2onnx reads graph inputs from: those are input pipelines);
- STRUCTURAL below: what every traced graph is made of and tf2onnx removes before converting
  (placeholders, function calls, control flow, in-memory variables), each with its reason.
tests/test_model_safety.py checks that the committed module holds the ops this script finds, and
that every SavedModel digitkit writes, Keras `model.export` writes and keras.applications
models become passes it.

Run: python scripts/savedmodel_ops.py            (rewrites the module)
     python scripts/savedmodel_ops.py --check    (exit 1 when the module is stale)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "src" / "digitkit" / "model" / "savedmodel_ops.py"

#: tf2onnx converts these, but they take data from outside the graph: never allowed.
DENIED_WORDS = ("Queue", "Iterator", "Reader", "File", "Dataset", "Summary", "Print", "Py")

#: Ops tf2onnx folds away before converting, or that hold tensors in memory only. Reasons
#: are what a reviewer needs: none of these reads, writes or talks to anything.
STRUCTURAL = {
    # graph plumbing
    "Placeholder": "a graph input", "PlaceholderWithDefault": "a graph input",
    "Const": "a constant", "Identity": "passes a tensor on", "IdentityN": "passes tensors on",
    "NoOp": "orders other ops", "StopGradient": "passes a tensor on",
    "PreventGradient": "passes a tensor on", "Snapshot": "copies a tensor",
    "EnsureShape": "checks a shape", "Assert": "fails the call on a false condition",
    "CheckNumerics": "fails the call on NaN/Inf",
    # function calls: the called function is itself checked, op by op
    "PartitionedCall": "calls a library function",
    "StatefulPartitionedCall": "calls a library function",
    # control flow (branches and bodies are library functions, checked)
    "If": "runs one of two functions", "StatelessIf": "runs one of two functions",
    "While": "runs a function in a loop", "StatelessWhile": "runs a function in a loop",
    "Case": "runs one of several functions", "StatelessCase": "runs one of several functions",
    "Switch": "TF1 control flow", "Merge": "TF1 control flow", "Enter": "TF1 control flow",
    "Exit": "TF1 control flow", "NextIteration": "TF1 control flow",
    "LoopCond": "TF1 control flow",
    # variables: tensors held in memory (restored by the checked restore function)
    "VarHandleOp": "a variable in memory", "ReadVariableOp": "reads a variable",
    "AssignVariableOp": "sets a variable", "AssignAddVariableOp": "updates a variable",
    "AssignSubVariableOp": "updates a variable", "ResourceGather": "reads a variable",
    "VariableShape": "a variable's shape", "VarIsInitializedOp": "asks about a variable",
    "DisableCopyOnRead": "a variable's copy mode", "DestroyResourceOp": "frees a variable",
    # random numbers (dropout, noise layers) and shape helpers Keras emits
    "StatelessRandomUniformV2": "random numbers", "StatelessRandomNormalV2": "random numbers",
    "StatelessRandomGetKeyCounter": "random numbers",
    "StatelessTruncatedNormalV2": "random numbers", "TruncatedNormal": "random numbers",
    "BroadcastArgs": "computes a shape", "BroadcastGradientArgs": "computes a shape",
    "Rank": "a tensor's rank", "ShapeN": "tensors' shapes",
    # elementwise math Keras layers emit that tf2onnx has no handler for
    "Erfc": "math (GELU in ConvNeXt)", "Expm1": "math", "Log1p": "math", "Xlogy": "math",
    "Xdivy": "math", "Lgamma": "math", "Digamma": "math", "Mod": "math",
    "TruncateMod": "math", "Inv": "math",
    # string computation (the save function builds its file names with StringJoin and
    # StaticRegexFullMatch; the file ops themselves are allowed only inside the save/restore
    # functions: digitkit.model.safety.SAVER_FILE_OPS)
    "StringJoin": "joins strings", "StaticRegexFullMatch": "matches a string",
    "RegexFullMatch": "matches a string", "StaticRegexReplace": "edits a string",
    "RegexReplace": "edits a string", "StringLength": "a string's length",
    "Substr": "part of a string", "StringLower": "a string in lower case",
    "StringUpper": "a string in upper case", "StringStrip": "trims a string",
    "StringSplitV2": "splits a string", "StringToHashBucketFast": "hashes a string",
}


def tf2onnx_ops() -> set[str]:
    """Every TensorFlow op name tf2onnx has a handler for, in any opset."""
    # Every handler module, whatever the caller imported before: the converter's own
    # opsets and the custom (contrib) ones.
    import tf2onnx.convert  # noqa: F401
    import tf2onnx.custom_opsets  # noqa: F401
    import tf2onnx.onnx_opset  # noqa: F401
    from tf2onnx.handler import tf_op

    ops: set[str] = set()
    for per_opset in tf_op.get_opsets().values():
        for handlers in per_opset:
            ops.update(handlers)
    return ops


def tensor_ops() -> list[str]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow  # noqa: F401 - registers the ops
    from tensorflow.python.framework import op_def_registry

    ops = {op for op in tf2onnx_ops() if not any(w in op for w in DENIED_WORDS)}
    ops |= STRUCTURAL.keys()
    return sorted(op for op in ops if op_def_registry.get(op) is not None)


def render() -> str:
    import tensorflow as tf
    import tf2onnx

    ops = tensor_ops()
    lines = [
        '"""The ops a SavedModel may run without --trust-model (digitkit.model.safety).',
        "",
        "GENERATED by scripts/savedmodel_ops.py (TensorFlow "
        f"{tf.__version__}, tf2onnx {tf2onnx.__version__}): do not edit;",
        "change the script and rerun it; tests/test_model_safety.py checks the list is current.",
        '"""',
        "",
        "TENSOR_OPS = frozenset({",
    ]
    row = "   "
    for op in ops:
        item = f' "{op}",'
        if len(row) + len(item) > 99:
            lines.append(row)
            row = "   "
        row += item
    lines.append(row)
    lines.append("})")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if "--check" in argv:
        from digitkit.model.savedmodel_ops import TENSOR_OPS

        if set(tensor_ops()) != TENSOR_OPS:
            print(f"{TARGET} is stale: run python scripts/savedmodel_ops.py", file=sys.stderr)
            return 1
        return 0
    text = render()
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
