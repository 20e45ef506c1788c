"""A model file carries its contract: .keras, .h5 and SavedModel, read back without running
anything in the model (digitkit.model.embedded)."""

from __future__ import annotations

import pytest

from digitkit.errors import ModelError
from digitkit.model.contract import image_contract
from digitkit.model.embedded import read_contract, read_record, write_contract

CONTRACT = image_contract(12, 10, 3, ["left", "right", "up"])


@pytest.fixture(scope="module")
def keras_model():
    pytest.importorskip("tensorflow")
    import keras

    return keras.Sequential([keras.Input((12, 10, 3), name="pixels"), keras.layers.Flatten(),
                             keras.layers.Dense(3, activation="softmax")])


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_files_carry_the_contract_and_still_load(tmp_path, keras_model, suffix):
    import keras

    path = tmp_path / f"m{suffix}"
    keras_model.save(path)
    assert read_contract(path) is None
    write_contract(path, CONTRACT, {"scale": "raw"})
    assert read_contract(path) == CONTRACT
    assert read_record(path)["convention"] == {"scale": "raw"}
    keras.models.load_model(path, compile=False)  # Keras ignores what we added


def test_a_savedmodel_carries_it_in_its_assets(tmp_path):
    path = tmp_path / "sm"
    path.mkdir()
    write_contract(path, CONTRACT)
    assert (path / "assets" / "digitkit.json").is_file()
    assert read_contract(path) == CONTRACT


def test_a_damaged_record_is_one_model_error(tmp_path, keras_model):
    import zipfile

    path = tmp_path / "m.keras"
    keras_model.save(path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("digitkit.json", "{not json")
    with pytest.raises(ModelError, match="m.keras: unreadable digitkit contract record"):
        read_contract(path)
