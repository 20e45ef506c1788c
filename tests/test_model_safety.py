"""digitkit.model.safety: a SavedModel is a program; its graph is read (never run) and held to
the allow-list of tensor-only ops before anything loads it, unless --trust-model.

The hostile SavedModels below honour digitkit's contract ('pixels' (N,28,28) -> 'probabilities'
(N,10)) so every command would otherwise run them as they are; each also does one thing a
model must not: write a file, read one, list a directory, save a checkpoint, or write a file
from a function nested inside the serving function. The file system shows whether that ran:
the written files are absent, and the read file and listed folder keep an access time of 0
(ext4's relatime updates an access time older than the modification time on any read).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

HOSTILE = ("write", "read", "list", "checkpoint", "nested")


class Victim:
    """The files one hostile model aims at, reset before every run."""

    def __init__(self, root: Path):
        self.root = root
        self.written = root / "pwned.txt"
        self.secret = root / "secret.txt"
        self.folder = root / "private"
        self.checkpoint = root / "stolen_ckpt"

    def reset(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for p in self.root.glob("pwned*"):
            p.unlink()
        for p in self.root.glob("stolen_ckpt*"):
            p.unlink()
        self.secret.write_text("the user's secret\n")
        self.folder.mkdir(exist_ok=True)
        (self.folder / "a.txt").write_text("a")
        for p in (self.secret, self.folder):
            os.utime(p, (0, p.stat().st_mtime))  # atime 0: any read moves it (relatime)

    def touched(self, kind: str) -> bool:
        """Did the hostile op of `kind` run?"""
        if kind in ("write", "nested"):
            return self.written.exists()
        if kind == "checkpoint":
            return any(self.root.glob("stolen_ckpt*"))
        path = self.secret if kind == "read" else self.folder
        return path.stat().st_atime != 0


def make_hostile(path: Path, kind: str, victim: Victim) -> Path:
    """A contract-shaped SavedModel (a softmax over a linear layer, with variables so it has
    save/restore functions) whose serving_default also does `kind`."""
    import tensorflow as tf

    rng = np.random.default_rng(0)

    @tf.function
    def inner():  # not an attribute of the module: saved only as the function serve calls
        tf.io.write_file(str(victim.written), "pwned")
        return tf.constant(0.0)

    class Hostile(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(rng.normal(0, 0.01, (784, 10)).astype(np.float32))
            self.b = tf.Variable(np.zeros(10, np.float32))

        @tf.function(input_signature=[tf.TensorSpec((None, 28, 28), tf.float32,
                                                    name="pixels")])
        def serve(self, pixels):
            logits = tf.reshape(pixels, (-1, 784)) / 255.0 @ self.w + self.b
            extra = tf.constant(0.0)
            if kind == "write":
                tf.io.write_file(str(victim.written), "pwned")
            elif kind == "read":
                data = tf.io.read_file(str(victim.secret))
                extra = tf.cast(tf.strings.length(data), tf.float32)
            elif kind == "list":
                extra = tf.cast(tf.size(tf.io.matching_files(str(victim.folder / "*"))),
                                tf.float32)
            elif kind == "checkpoint":
                save = tf.raw_ops.SaveV2(prefix=str(victim.checkpoint), tensor_names=["w"],
                                         shape_and_slices=[""], tensors=[self.w])
                with tf.control_dependencies([save]):  # else pruned: nothing reads it
                    extra = tf.identity(extra)
            elif kind == "nested":
                extra = inner()
            # The read, the listing and the save feed the output (times 0): not pruned.
            return {"probabilities": tf.nn.softmax(logits + 0.0 * extra)}

    module = Hostile()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


@pytest.fixture(scope="session")
def hostile(tmp_path_factory):
    """kind -> (SavedModel path, Victim), built once."""
    root = tmp_path_factory.mktemp("hostile")
    models = {}
    for kind in HOSTILE:
        victim = Victim(root / f"victim-{kind}")
        victim.reset()
        models[kind] = (make_hostile(root / f"{kind}_sm", kind, victim), victim)
    return models


def _digitkit(*args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "digitkit", *map(str, args)], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def _command(name, model, out, mnist_dir, png_dir):
    if name == "export":
        return ["export", model, "--format", "onnx", "--out", out, "--images", 50,
                "--data", mnist_dir]
    if name == "infer":
        return ["infer", model, png_dir, "-o", out, "--workers", 0, "-q"]
    return ["bench", model, "--runtimes", "tensorflow", "--batch-sizes", 1, "--iterations", 1,
            "--warmup", 0, "--check-images", 10, "--data", mnist_dir, "--json", out]


@pytest.fixture(scope="session")
def few_pngs(tmp_path_factory, png_test_dir):
    """Six MNIST test PNGs in class folders."""
    root = tmp_path_factory.mktemp("pngs")
    for digit in ("3", "7"):
        (root / digit).mkdir()
        for src in sorted((png_test_dir / digit).iterdir())[:3]:
            shutil.copy(src, root / digit / src.name)
    return root


# ------------------------------------------------------------------- the check, in-process


@pytest.mark.parametrize("kind,op", [("write", "WriteFile"), ("read", "ReadFile"),
                                     ("list", "MatchingFiles"), ("checkpoint", "SaveV2"),
                                     ("nested", "WriteFile")])
def test_hostile_graph_refused_naming_op_and_function(hostile, kind, op):
    from digitkit.errors import ModelError
    from digitkit.model.safety import check_savedmodel, savedmodel_problems

    path, victim = hostile[kind]
    problems = savedmodel_problems(path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"op {op} (")
    # The nested write sits in the inner function, not the serving one.
    assert ("_inner_" if kind == "nested" else "_serve_") in problems[0]
    with pytest.raises(ModelError) as e:
        check_savedmodel(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    assert f"op {op}" in message and "in function __inference_" in message
    assert "--trust-model" in message
    check_savedmodel(path, trust_model=True)  # the opt-in reads nothing
    victim.reset()
    assert not victim.touched(kind)


def test_the_loader_refuses_before_loading(hostile):
    """The one SavedModel loader checks first: refused, and the write never happened; trusted,
    the same loader runs the model and the file appears (the op is real)."""
    from digitkit.errors import ModelError
    from digitkit.model.loading import load_savedmodel

    path, victim = hostile["write"]
    victim.reset()
    with pytest.raises(ModelError, match="op WriteFile"):
        load_savedmodel(path)
    assert not victim.touched("write")
    signature = load_savedmodel(path, trust_model=True)
    out = signature(np.zeros((2, 28, 28), np.float32))
    assert out["probabilities"].shape == (2, 10)
    assert victim.touched("write")
    victim.reset()


def _rewrite_restore(src: Path, dst: Path, edit, which="_traced_restore_") -> Path:
    """A copy of SavedModel `src` whose restore function (or the function whose name holds
    `which`) was changed by `edit(function)`."""
    from tensorflow.core.protobuf import saved_model_pb2

    shutil.copytree(src, dst)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((src / "saved_model.pb").read_bytes())
    fn = next(f for f in proto.meta_graphs[0].graph_def.library.function
              if which in f.signature.name)
    edit(fn)
    (dst / "saved_model.pb").write_bytes(proto.SerializeToString())
    return dst


def _path_const(fn, value: bytes) -> str:
    node = fn.node_def.add(name="evil_path", op="Const")
    node.attr["dtype"].type = 7  # DT_STRING
    node.attr["value"].tensor.dtype = 7
    node.attr["value"].tensor.string_val.append(value)
    return "evil_path:output:0"


def test_restore_path_must_stay_in_the_model_folder(export_dir, tmp_path):
    """Checkpoint ops belong in the save/restore functions, reading the path the loader feeds
    them (the model's own variables/); a restore from a path of the model's choosing is
    refused, and so is one that climbs out of the folder."""
    from digitkit.model.safety import savedmodel_problems

    good = export_dir / "saved_model"
    assert savedmodel_problems(good) == []

    def absolute(fn):
        (restore,) = [n for n in fn.node_def if n.op == "RestoreV2"]
        restore.input[0] = _path_const(fn, b"/home/user/.ssh/id_rsa")

    def climbing(fn):
        (restore,) = [n for n in fn.node_def if n.op == "RestoreV2"]
        join = fn.node_def.add(name="evil_join", op="StringJoin")
        join.attr["N"].i = 2
        join.input.extend([restore.input[0], _path_const(fn, b"/../../../etc/secrets")])
        restore.input[0] = "evil_join:output:0"

    def moved_write(fn):  # a file write added to the restore function is still refused
        node = fn.node_def.add(name="evil_write", op="WriteFile")
        node.input.extend([_path_const(fn, b"/tmp/x"), _path_const(fn, b"y")])

    found = savedmodel_problems(_rewrite_restore(good, tmp_path / "abs", absolute))
    assert any("checkpoint path that is a constant in function __inference__traced_restore"
               in p for p in found), found
    found = savedmodel_problems(_rewrite_restore(good, tmp_path / "up", climbing))
    assert any("'/../../../etc/secrets' (leaves the model's folder)" in p for p in found), found
    found = savedmodel_problems(_rewrite_restore(good, tmp_path / "write", moved_write))
    assert any(p.startswith("op WriteFile (writes a file) in function __inference__traced_"
                            "restore") for p in found), found


def test_an_op_called_by_name_is_checked(export_dir, tmp_path):
    """TensorFlow runs a primitive op named in a call's `f` as a one-op function: that name is
    held to the allow-list like any node's op."""
    from digitkit.model.safety import savedmodel_problems

    def call_write(fn):
        node = fn.node_def.add(name="sneaky", op="PartitionedCall")
        node.attr["f"].func.name = "WriteFile"

    found = savedmodel_problems(_rewrite_restore(export_dir / "saved_model", tmp_path / "c",
                                                 call_write, which="serve"))
    assert len(found) == 1 and found[0].startswith(
        "op WriteFile (writes a file) called by PartitionedCall in function "), found


# ------------------------------------------------------------------- the allow-list


def _script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("savedmodel_ops_script",
                                                  REPO / "scripts" / "savedmodel_ops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_allow_list_is_what_the_script_generates():
    from digitkit.model.savedmodel_ops import TENSOR_OPS

    assert set(_script().tensor_ops()) == TENSOR_OPS, "run python scripts/savedmodel_ops.py"


def test_allow_list_holds_no_op_that_leaves_the_graph():
    from tensorflow.python.framework import op_def_registry

    from digitkit.model.safety import SAVER_FILE_OPS
    from digitkit.model.savedmodel_ops import TENSOR_OPS

    outside = {"WriteFile", "ReadFile", "MatchingFiles", "SaveV2", "RestoreV2", "Save",
               "Restore", "SaveSlices", "RestoreSlice", "MergeV2Checkpoints", "PyFunc",
               "PyFuncStateless", "EagerPyFunc", "PrintV2", "Print", "ImmutableConst",
               "WriteSummary", "CreateSummaryFileWriter", "FIFOQueueV2", "IteratorV2",
               "IteratorGetNext", "TFRecordDataset", "FixedLengthRecordReaderV2",
               "InitializeTableFromTextFileV2", "DecodeProtoV2", "DebugIdentityV2"}
    assert not (outside | SAVER_FILE_OPS.keys()) & TENSOR_OPS
    assert all(op_def_registry.get(op) is not None for op in TENSOR_OPS)


def test_every_savedmodel_digitkit_writes_passes(export_dir, tmp_path, mnist_dir):
    """The export of the seed MLP (export_dir) and of the digit CNN, and the adapted copy
    digitkit writes of a foreign SavedModel, all pass without --trust-model."""
    import keras

    from conftest import run_cli
    from digitkit.architectures import build_model
    from digitkit.model.conventions import InputConvention
    from digitkit.model.safety import savedmodel_problems
    from digitkit.predictors.adapted import adapted_copy, load_source

    assert savedmodel_problems(export_dir / "saved_model") == []
    keras.utils.set_random_seed(0)
    build_model("cnn").save(tmp_path / "cnn.h5")
    r = run_cli("export", tmp_path / "cnn.h5", "--format", "savedmodel", "--images", 50,
                "--data", mnist_dir, "--out", tmp_path / "cnn")
    assert r.exit_code == 0, r.output
    assert savedmodel_problems(tmp_path / "cnn" / "saved_model") == []

    foreign = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(10, activation="softmax")])
    foreign.export(tmp_path / "foreign_sm", verbose=False)
    copy = adapted_copy(load_source(tmp_path / "foreign_sm"),
                        InputConvention(layout="NHWC", scale="unit"))
    assert copy.is_dir() and savedmodel_problems(copy) == []


def test_keras_export_of_every_fixture_architecture_passes(zoo, tmp_path):
    """Keras's model.export of each Keras model of the bring-your-own-model zoo."""
    import keras

    from _foreign_models import FIXTURES
    from digitkit.model.safety import savedmodel_problems

    names = [n for n, (f, _) in FIXTURES.items() if not f.endswith(".onnx")]
    assert names
    for name in names:
        model = keras.models.load_model(zoo.path(name), compile=False)
        out = tmp_path / name
        model.export(out, verbose=False)
        assert savedmodel_problems(out) == [], name


def _narrow_resnet(**kwargs):
    """keras.applications' ResNet code (bottleneck blocks v1, as ResNet50) at 8..64 filters
    and 2/1/1/1 blocks per stage: the layers, so the ops, of ResNet50 (the same 32 op types
    in its SavedModel when this was written), without its 25 million weights to write."""
    from keras.src.applications import resnet

    def stacks(x):
        x = resnet.stack_residual_blocks_v1(x, 8, 2, stride1=1, name="conv2")
        x = resnet.stack_residual_blocks_v1(x, 16, 1, name="conv3")
        x = resnet.stack_residual_blocks_v1(x, 32, 1, name="conv4")
        return resnet.stack_residual_blocks_v1(x, 64, 1, name="conv5")

    return resnet.ResNet(stacks, preact=False, use_bias=True, name="resnet_narrow", **kwargs)


def _narrow_convnext(**kwargs):
    """keras.applications' ConvNeXt code (as ConvNeXtTiny: GELU, so Erfc; LayerNorm; layer
    scale) at one block of 8..64 channels per stage: the same 41 op types as ConvNeXtTiny's
    SavedModel when this was written."""
    from keras.src.applications import convnext

    return convnext.ConvNeXt(depths=[1, 1, 1, 1], projection_dims=[8, 16, 32, 64],
                             name="convnext_narrow", **kwargs)


def _narrow_efficientnet(**kwargs):
    """keras.applications' EfficientNetV2 code with B0's blocks at a quarter of B0's width
    and depth: the same 39 op types as EfficientNetV2B0's SavedModel when this was written."""
    from keras.src.applications import efficientnet_v2

    return efficientnet_v2.EfficientNetV2(width_coefficient=0.25, depth_coefficient=0.25,
                                          default_size=224, name="efficientnetv2-b0",
                                          **kwargs)


#: name -> builder. MobileNetV3Small as Keras ships it; EfficientNetV2B0, ResNet50 and
#: ConvNeXtTiny narrowed by keras.applications' own code (`_narrow_*`): the check reads op
#: types, which the width and depth of a network do not change.
_APPLICATIONS = {
    "MobileNetV3Small": lambda **kw: keras_application("MobileNetV3Small", **kw),
    "EfficientNetV2B0-narrow": _narrow_efficientnet,
    "ConvNeXt-narrow": _narrow_convnext,
    "ResNet50-narrow": _narrow_resnet,
}


def keras_application(name, **kwargs):
    import keras

    return getattr(keras.applications, name)(**kwargs)


@pytest.mark.parametrize("name", [
    "MobileNetV3Small",
    pytest.param("EfficientNetV2B0-narrow", marks=pytest.mark.slow),
    pytest.param("ConvNeXt-narrow", marks=pytest.mark.slow),  # GELU: Erfc
    pytest.param("ResNet50-narrow", marks=pytest.mark.slow),
])
def test_keras_applications_pass(name, tmp_path):
    """keras.applications models with random weights (weights=None), exported by Keras."""
    from digitkit.model.safety import savedmodel_problems

    model = _APPLICATIONS[name](weights=None, input_shape=(32, 32, 3), classes=10)
    model.export(tmp_path / name, verbose=False)
    assert savedmodel_problems(tmp_path / name) == []


# ------------------------------------------------------------------- the commands, for real


#: (kind, command) pairs run in a real process: every hostile kind and every command, each
#: command on two kinds. Not the whole product: every command loads a SavedModel through the
#: one loader (model.loading.load_savedmodel), whose check_savedmodel comes first and alone
#: depends on the kind; that check is run on every kind in-process above
#: (test_hostile_graph_refused_naming_op_and_function). What a real process adds is the
#: command's wiring: exit 1, one line, nothing written, nothing run.
REFUSALS = [("write", "export"), ("write", "bench"), ("read", "infer"), ("list", "bench"),
            ("checkpoint", "export"), ("nested", "infer")]


def test_the_refusals_run_every_kind_and_every_command():
    assert {k for k, _ in REFUSALS} == set(HOSTILE)
    assert {c for _, c in REFUSALS} == {"export", "infer", "bench"}


@pytest.mark.parametrize("kind,command", REFUSALS)
def test_commands_refuse_hostile_savedmodels(hostile, kind, command, tmp_path, mnist_dir,
                                             few_pngs):
    """`digitkit export|infer|bench` in a real process: exit 1, one line naming the op, the
    function and --trust-model; no output written and the hostile op never ran."""
    path, victim = hostile[kind]
    victim.reset()
    out = tmp_path / {"export": "out", "infer": "out.csv", "bench": "out.json"}[command]
    r = _digitkit(*_command(command, path, out, mnist_dir, few_pngs), cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("digitkit: error: ")]
    assert len(lines) == 1, r.stderr
    assert "refusing to run a SavedModel" in lines[0] and "in function __inference_" in lines[0]
    assert "--trust-model" in lines[0]
    assert not out.exists()
    assert not victim.touched(kind)


@pytest.mark.parametrize("kind", HOSTILE)
def test_infer_runs_hostile_savedmodels_when_trusted(hostile, kind, tmp_path, few_pngs):
    """--trust-model is the user's opt-in: the rows are written, and the op did run."""
    path, victim = hostile[kind]
    victim.reset()
    out = tmp_path / "out.csv"
    r = _digitkit(*_command("infer", path, out, None, few_pngs), "--trust-model", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 1 + 6
    assert victim.touched(kind)
    victim.reset()


@pytest.mark.parametrize("command", ["export", "bench"])
def test_export_and_bench_run_a_trusted_hostile_savedmodel(hostile, command, tmp_path,
                                                           mnist_dir, few_pngs):
    path, victim = hostile["write"]
    victim.reset()
    out = tmp_path / ("out" if command == "export" else "out.json")
    r = _digitkit(*_command(command, path, out, mnist_dir, few_pngs), "--trust-model",
                  cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert out.exists() and victim.touched("write")
    victim.reset()


def test_trust_model_is_an_option_of_every_command_that_runs_a_model():
    from click.testing import CliRunner

    from digitkit.cli import cli

    for command in ("export", "infer", "bench"):
        r = CliRunner().invoke(cli, [command, "--help"])
        assert "--trust-model" in r.output, command
    assert "--trust-model" not in CliRunner().invoke(cli, ["view", "--help"]).output


def test_litert_refuses_a_tflite_carrying_tensorflow_ops(tmp_path, few_pngs):
    """The README's reason LiteRT files need no rule of their own: a .tflite whose graph
    carries a TensorFlow op (Flex) that writes a file does not run on the standalone
    interpreter `infer` uses; exit 1 and the file is never written."""
    pytest.importorskip("ai_edge_litert")
    import tensorflow as tf

    target = tmp_path / "flex_pwned.txt"

    @tf.function(input_signature=[tf.TensorSpec((None, 28, 28), tf.float32)])
    def serve(pixels):
        tf.io.write_file(str(target), "pwned")
        return tf.nn.softmax(tf.reshape(pixels, (-1, 784))[:, :10])

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], serve)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    model = tmp_path / "flex.tflite"
    model.write_bytes(converter.convert())
    out = tmp_path / "out.csv"
    r = _digitkit("infer", model, few_pngs, "-o", out, "--workers", 0, "-q", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "Flex" in r.stderr or "Select TensorFlow op" in r.stderr, r.stderr
    assert not target.exists() and not out.exists()


def test_tf1_savedmodel_saver_in_the_graph(tmp_path):
    """A TF1 SavedModel keeps its saver as graph nodes (save/SaveV2, save/RestoreV2 on the fed
    filename save/Const): it passes; pointed at a constant path instead, it is refused."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    from digitkit.model.safety import savedmodel_problems

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        # Seeded: an earlier `digitkit train` in this process enables TensorFlow's op
        # determinism, under which an unseeded initializer is refused.
        tf1.set_random_seed(0)
        x = tf1.placeholder(tf.float32, (None, 28, 28), name="pixels")
        w = tf1.get_variable("w", (784, 10))
        y = tf.nn.softmax(tf.reshape(x, (-1, 784)) @ w, name="probabilities")
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            tf1.saved_model.simple_save(session, str(tmp_path / "tf1"), {"pixels": x},
                                        {"probabilities": y})
    assert savedmodel_problems(tmp_path / "tf1") == []

    shutil.copytree(tmp_path / "tf1", tmp_path / "bad")
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((tmp_path / "tf1" / "saved_model.pb").read_bytes())
    (restore,) = [n for n in proto.meta_graphs[0].graph_def.node if n.op == "RestoreV2"]
    const = proto.meta_graphs[0].graph_def.node.add(name="evil_path", op="Const")
    const.attr["value"].tensor.string_val.append(b"/etc/secrets")
    restore.input[0] = "evil_path"
    (tmp_path / "bad" / "saved_model.pb").write_bytes(proto.SerializeToString())
    found = savedmodel_problems(tmp_path / "bad")
    assert any("checkpoint path that is a constant in the graph, node 'save/RestoreV2'" in p
               for p in found), found


def test_a_corrupt_saved_model_pb_is_one_line(tmp_path):
    from digitkit.errors import ModelError
    from digitkit.model.safety import check_savedmodel

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "saved_model.pb").write_bytes(b"\xff\xff\xff\xff")
    with pytest.raises(ModelError, match=r"bad: cannot parse saved_model.pb \("):
        check_savedmodel(tmp_path / "bad")
