"""Write tests/fixtures/legacy_tfkeras_notebook.h5: the classic notebook's model saved by
legacy tf.keras 2.x (the `tf-keras` package), so the tests can prove that digitkit reads the
Keras 2 HDF5 format without installing tf-keras in CI.

The notebook: x = keras.utils.normalize(x_train, axis=1) OUTSIDE the model; Flatten, Dense 64
relu, Dense 32 relu, Dense 10 softmax; adam, sparse categorical cross-entropy; model.save(.h5).
Trained here on the first 12,000 training images for 2 epochs (~93% test accuracy) and saved
without the optimizer state (~215 KB).

tf-keras 2.21 matches TensorFlow 2.21 but requires the `tensorflow` package, not the
`tensorflow-cpu` digitkit installs, so install it beside the venv without its dependencies:

    .venv/bin/pip install --no-deps --target /tmp/tfk tf-keras==2.21.0
    PYTHONPATH=/tmp/tfk .venv/bin/python scripts/make_legacy_h5.py --data ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "fixtures" / "legacy_tfkeras_notebook.h5"
TRAIN_IMAGES = 12000
EPOCHS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mnist",
                        help="directory with the MNIST IDX files")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import h5py
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras  # legacy tf.keras 2.x: writes the Keras 2 HDF5 layout

    from digitkit.data import read_idx

    x, _ = read_idx(args.data / "train-images-idx3-ubyte.gz")
    y, _ = read_idx(args.data / "train-labels-idx1-ubyte.gz")
    x, y = x[:TRAIN_IMAGES], y[:TRAIN_IMAGES]

    tf.random.set_seed(0)
    np.random.seed(0)
    x = keras.utils.normalize(x, axis=1)
    model = keras.models.Sequential([
        keras.layers.Flatten(input_shape=(28, 28)),
        keras.layers.Dense(64, activation=tf.nn.relu),
        keras.layers.Dense(32, activation=tf.nn.relu),
        keras.layers.Dense(10, activation=tf.nn.softmax),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=EPOCHS, verbose=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out, include_optimizer=False)
    with h5py.File(args.out, "r") as f:
        version = f.attrs["keras_version"]
    version = version.decode() if isinstance(version, bytes) else version
    assert version.startswith("2."), f"expected a Keras 2 file, got keras_version {version}"
    print(f"{args.out}: keras_version {version}, {args.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
