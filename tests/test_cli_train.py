"""`digitkit train [DIR]`'s command line: which options apply to which training, and the
one-line refusals, all before any data is read or TensorFlow imported."""

import pytest

from _cli import run_cli


@pytest.mark.parametrize("args, message", [
    (["--val-fraction", "0.1"], "--val-fraction applies to training on a folder"),
    (["--input-size", "32x32"], "--input-size applies to training on a folder"),
    (["--weights", "imagenet"], "--weights applies to training on a folder"),
    (["--flip"], "--flip applies to training on a folder"),
    (["--arch", "small-cnn"], "--arch small-cnn does not train on MNIST digits; choose from "
                              "cnn, seed-mlp"),
])
def test_folder_options_without_a_folder(tmp_path, args, message):
    r = run_cli("train", "--out", tmp_path / "o", *args)
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines() == [r.output.strip()] and message in r.output


@pytest.mark.parametrize("args, message", [
    (["--data", "mnist"], "--data applies to training on MNIST (no DIR)"),
    (["--limit", "5"], "--limit applies to training on MNIST (no DIR)"),
    (["--arch", "cnn"], "--arch cnn does not train on a labelled folder; choose from small-cnn"),
    (["--weights", "imagenet"], "--weights applies to transfer networks, not --arch small-cnn"),
    (["--arch", "mobilenet-v3-small", "--input-size", "16x16", "--weights", "none"],
     "--arch mobilenet-v3-small needs an input of at least 32x32, not 16x16"),
    (["--input-size", "32"], "'32' is not HxW"),
    (["--arch", "efficientnet-v2-b0", "--weights", "no-such.weights.h5"],
     "no-such.weights.h5: no such file"),
    (["--channels", "2"], "'2' is not one of '1', '3'"),
    (["--val-fraction", "0.9"], "0.9 is not in the range 0<x<=0.5"),
])
def test_refusals_with_a_folder(image_set, tmp_path, args, message):
    r = run_cli("train", image_set, "--out", tmp_path / "o", "--epochs", "1", *args)
    assert r.exit_code in (1, 2), r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("digitkit: error: ") and message in lines[0]
    assert not (tmp_path / "o" / "model.keras").exists()


def test_a_missing_folder_is_one_line(tmp_path):
    r = run_cli("train", tmp_path / "nope", "--out", tmp_path / "o")
    assert r.exit_code == 1
    assert r.output.strip() == f"digitkit: error: {tmp_path / 'nope'}: no such folder"


def test_refuses_to_overwrite_a_model_without_force(image_set, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "model.keras").write_bytes(b"precious")
    r = run_cli("train", image_set, "--out", tmp_path / "o")
    assert r.exit_code == 1
    assert "model.keras: already exists; pass --force to overwrite" in r.output
    assert (tmp_path / "o" / "model.keras").read_bytes() == b"precious"


def test_help_names_every_architecture_and_its_defaults():
    from digitkit.architectures import TABLE

    text = " ".join(run_cli("train", "--help").output.split()).replace("- ", "-")
    for name, arch in TABLE.items():
        assert f"{name}:" in text and f"{arch.defaults['epochs']} for {name}" in text


def test_an_output_inside_the_folder_is_refused(image_set, tmp_path):
    r = run_cli("train", image_set, "--out", image_set / "run")
    assert r.exit_code == 2
    assert r.output.strip() == (f"digitkit: error: {image_set / 'run'}: the output directory is "
                                f"inside {image_set}, where it would be read as a class "
                                f"folder; choose another --out")
    assert not (image_set / "run").exists()
