"""Training on MNIST (`digitkit train`, no folder): fit a digit model and write it with its
reports.

Output directory layout (the configuration travels with the artifact, as nanoGPT keeps
`model_args` in its checkpoint):
  model.h5                    the Keras model (HDF5)
  train.json                  configuration, data checksums, per-epoch history, test metrics,
                              library versions, wall time
  history.png                 loss and accuracy per epoch, train and validation
  classification_report.txt   per-class precision, recall, f1, support (scikit-learn layout)
  confusion_matrix.png        on the test set
"""

from __future__ import annotations

import math
import platform
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from digitkit import __version__
from digitkit.architectures import DEFAULT_ARCH, DIGITS, TRAIN_DEFAULTS, get_arch
from digitkit.artifacts import (
    atomic_path,
    ensure_dir,
    guard_output,
    write_json_atomic,
    write_text_atomic,
)
from digitkit.environment import library_versions
from digitkit.errors import UsageError
from digitkit.model.files import SOURCE_COPY
from digitkit.model.loading import import_tensorflow

MODEL_FILE = SOURCE_COPY  # the same name an export directory gives its source copy
RECORD_FILE = "train.json"
ARTIFACTS = (MODEL_FILE, RECORD_FILE, "history.png", "classification_report.txt",
             "confusion_matrix.png")


@dataclass
class TrainConfig:
    arch: str = DEFAULT_ARCH
    epochs: int | None = None  # None: the architecture's default (TRAIN_DEFAULTS)
    batch_size: int | None = None
    learning_rate: float | None = None
    augment: bool | None = None
    seed: int = 0
    # Training images held out (the last N) for the validation curves; None: the
    # architecture's default. 0 trains on everything and monitors the test set per epoch
    # (monitoring only: nothing is selected or stopped on it).
    validation_size: int | None = None
    limit: int | None = None  # train on the first N training images only (quick runs, tests)

    def resolved(self) -> TrainConfig:
        get_arch(self.arch, DIGITS)  # a known architecture that trains on digits
        d = TRAIN_DEFAULTS[self.arch]
        cfg = TrainConfig(**asdict(self))
        for key in ("epochs", "batch_size", "learning_rate", "augment", "validation_size"):
            if getattr(cfg, key) is None:
                setattr(cfg, key, d[key])
        if cfg.epochs < 1:
            raise UsageError("--epochs must be at least 1")
        if cfg.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if cfg.validation_size < 0:
            raise UsageError("--validation-size must be 0 or more")
        if cfg.limit is not None and cfg.limit < 1:
            raise UsageError("--limit must be at least 1")
        return cfg


class Trainer:
    """Trains one model into `out_dir`. Cheap to construct; `fit` does the work."""

    def __init__(self, config: TrainConfig, out_dir, force: bool = False, verbose: int = 2):
        self.config = config
        self.out_dir = Path(out_dir)
        self.force = force
        self.verbose = verbose

    def check_output(self) -> None:
        """Refuse before spending minutes on training, not after."""
        for name in ARTIFACTS:
            guard_output(self.out_dir / name, self.force)
        ensure_dir(self.out_dir)

    def fit(self, data) -> dict:
        cfg = self.config.resolved()
        self.check_output()
        t0 = time.perf_counter()

        tf = import_tensorflow("digitkit train")
        import keras

        from digitkit.architectures import build_model, compile_model
        from digitkit.reports import (
            classification_report,
            confusion_matrix,
            report_dict,
            save_confusion_matrix_png,
            save_history_png,
        )

        # Same seed, same data, same metrics: seed every generator and ask TF for
        # deterministic kernels (a few percent slower on CPU, worth it for reproducibility).
        keras.utils.set_random_seed(cfg.seed)
        tf.config.experimental.enable_op_determinism()

        x_train, y_train = data.x_train, data.y_train
        if cfg.limit is not None:
            x_train, y_train = x_train[: cfg.limit], y_train[: cfg.limit]
        n_val = min(cfg.validation_size, len(x_train) // 5)
        x_fit, y_fit = x_train[: len(x_train) - n_val], y_train[: len(y_train) - n_val]
        if n_val:
            x_val, y_val = x_train[len(x_train) - n_val:], y_train[len(y_train) - n_val:]
            val_source = f"last {n_val} training images (held out)"
        else:
            x_val, y_val = data.x_test, data.y_test
            val_source = "test set (monitoring only: nothing is selected or stopped on it)"

        steps = math.ceil(len(x_fit) / cfg.batch_size)
        model = compile_model(build_model(cfg.arch), cfg.learning_rate, steps, cfg.epochs)
        train_ds = _dataset(x_fit, y_fit, cfg.batch_size, cfg.seed, cfg.augment, shuffle=True)
        val_ds = _dataset(x_val, y_val, 1024, cfg.seed, False, shuffle=False)

        epoch_times = []

        class _Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                epoch_times.append(time.perf_counter() - self._t)

        t_fit = time.perf_counter()
        with warnings.catch_warnings():
            # Keras warns that shuffle=True is ignored for tf.data input; the dataset shuffles.
            warnings.simplefilter("ignore", UserWarning)
            history = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs,
                                verbose=self.verbose, callbacks=[_Timer()])
        fit_seconds = time.perf_counter() - t_fit

        probs = model.predict(data.x_test.astype(np.float32), batch_size=1024, verbose=0)
        y_pred = probs.argmax(axis=1)
        test_loss = float(np.mean(-np.log(np.clip(
            probs[np.arange(len(y_pred)), data.y_test.astype(np.int64)], 1e-12, 1.0))))
        test_acc = float(np.mean(y_pred == data.y_test))

        hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        cm = confusion_matrix(data.y_test, y_pred)
        record = {
            "digitkit_version": __version__,
            "config": asdict(cfg),
            "data": {
                "source": data.source,
                "checksums_md5": data.checksums,
                "train_images": int(len(x_fit)),
                "validation_images": int(len(x_val)),
                "validation_source": val_source,
                "test_images": int(len(data.x_test)),
            },
            "history": hist,
            "epoch_seconds": [round(t, 3) for t in epoch_times],
            "test": {"loss": test_loss, "accuracy": test_acc,
                     "report": report_dict(data.y_test, y_pred)},
            "model": {"file": MODEL_FILE, "parameters": int(model.count_params())},
            "environment": _environment(),
            "fit_seconds": round(fit_seconds, 3),
            "wall_seconds": None,  # filled in last, after every artifact is written
        }

        with atomic_path(self.out_dir / MODEL_FILE, suffix=".h5") as tmp, _quiet_h5_warning():
            model.save(tmp)
        write_text_atomic(self.out_dir / "classification_report.txt",
                          classification_report(data.y_test, y_pred))
        save_history_png(hist, self.out_dir / "history.png",
                         title=f"{cfg.arch}: loss and accuracy per epoch",
                         validation_label="validation" if n_val else "test (monitor)")
        save_confusion_matrix_png(cm, self.out_dir / "confusion_matrix.png",
                                  title=f"{cfg.arch} on MNIST test (accuracy {test_acc:.4f})")
        record["wall_seconds"] = round(time.perf_counter() - t0, 3)
        write_json_atomic(self.out_dir / RECORD_FILE, record)
        return record


def _dataset(x, y, batch_size, seed, augment, shuffle):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).enumerate()
    if augment:
        fn = lambda i, b: _augment(i, b, seed)  # noqa: E731
    else:
        fn = lambda i, b: (tf.cast(b[0], tf.float32), b[1])  # noqa: E731
    # Stateless per-batch randomness keeps parallel mapping deterministic.
    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)


def _augment(index, batch, seed):
    """Small random rotation, scale and shift (+-8 deg, +-8 %, +-2 px), as in MNIST lore.

    Stateless random numbers seeded by (seed, batch index) so that parallel mapping stays
    deterministic; reshuffled epochs still see new transforms because the index keeps counting.
    """
    import tensorflow as tf

    x, y = batch
    x = tf.cast(x, tf.float32)[..., None]
    n = tf.shape(x)[0]
    s = tf.stack([tf.cast(seed, tf.int64), index])
    u = tf.random.stateless_uniform((n, 4), seed=s, minval=-1.0, maxval=1.0)
    angle = u[:, 0] * (8.0 * math.pi / 180.0)
    scale = 1.0 + 0.08 * u[:, 1]
    tx, ty = 2.0 * u[:, 2], 2.0 * u[:, 3]
    # Output->input mapping about the image centre (13.5, 13.5), as ImageProjectiveTransform wants.
    c = 13.5
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a0, a1 = cos, -sin
    b0, b1 = sin, cos
    a2 = c - a0 * c - a1 * c - tx
    b2 = c - b0 * c - b1 * c - ty
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.constant([28, 28]),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    return out[..., 0], y


@contextmanager
def _quiet_h5_warning():
    """Keras calls HDF5 "legacy"; .h5 is the format this project promises, so say it once here."""
    import absl.logging

    level = absl.logging.get_verbosity()
    absl.logging.set_verbosity(absl.logging.ERROR)
    try:
        yield
    finally:
        absl.logging.set_verbosity(level)


def _environment() -> dict:
    import tensorflow as tf

    # "tensorflow" by its import name too: the distribution may be tensorflow-cpu.
    return {"platform": platform.platform(), "tensorflow": tf.__version__, **library_versions()}
