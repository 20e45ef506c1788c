"""Training on a labelled folder (`digitkit train DIR`): any image classifier.

Output directory layout (the configuration travels with the artifact, as nanoGPT keeps
`model_args` in its checkpoint):
  model.keras                 the Keras model: input "pixels" float32 (N,H,W,C) raw 0..255,
                              normalisation inside, output "probabilities" (N,K); its
                              contract (class names, input, pixel policy) embedded
                              (`digitkit.model.embedded`), so export, infer and bench need
                              no flags
  train.json                  configuration, data (splits, class balance, bad files), the
                              input rule's choice, per-epoch history, final metrics, library
                              versions, wall time
  history.png                 loss and accuracy per epoch, train and validation
  classification_report.txt   per-class precision, recall, f1, support, by class name
  confusion_matrix.png        on the test folder (the validation images when there is none)

Data, splits, the input rule and the cache: `digitkit.train.folder_data`; batches and
augmentation: `digitkit.train.pipeline`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from digitkit import __version__
from digitkit.architectures import DEFAULT_FOLDER_ARCH, FINE_TUNE_RATE, IMAGES, get_arch
from digitkit.artifacts import (
    atomic_path,
    ensure_dir,
    guard_output,
    write_json_atomic,
    write_text_atomic,
)
from digitkit.errors import UsageError
from digitkit.images.resize import RESIZE_MODES

FOLDER_MODEL_FILE = "model.keras"
RECORD_FILE = "train.json"
FOLDER_ARTIFACTS = (FOLDER_MODEL_FILE, RECORD_FILE, "history.png",
                    "classification_report.txt", "confusion_matrix.png")


@dataclass
class FolderConfig:
    arch: str = DEFAULT_FOLDER_ARCH
    epochs: int | None = None  # None: the architecture's default (architectures.TABLE)
    batch_size: int | None = None
    learning_rate: float | None = None
    augment: bool | None = None
    flip: bool = False  # mirror half the pictures (off: a mirrored digit or text is another)
    fine_tune_epochs: int | None = None  # transfer networks: epochs with the backbone unfrozen
    weights: str | None = None  # transfer networks: "imagenet" (default), "none" or a file
    seed: int = 0
    val_fraction: float | None = None  # None: folder_data.DEFAULT_VAL_FRACTION (without val/)
    input_size: tuple[int, int] | None = None  # None: chosen from the data
    channels: int | None = None  # None: chosen from the data
    resize: str = "squash"
    workers: int | None = None  # decoding processes; None: one per usable CPU

    def resolved(self) -> FolderConfig:
        arch = get_arch(self.arch, IMAGES)
        cfg = replace(self)
        for key, value in arch.defaults.items():
            if getattr(cfg, key, None) is None:
                setattr(cfg, key, value)
        if cfg.epochs < 1:
            raise UsageError("--epochs must be at least 1")
        if cfg.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if cfg.fine_tune_epochs < 0:
            raise UsageError("--fine-tune-epochs must be 0 or more")
        if not arch.transfer:
            if cfg.fine_tune_epochs:
                raise UsageError(f"--fine-tune-epochs applies to transfer networks, not "
                                 f"--arch {cfg.arch} (trained from scratch)")
            if cfg.weights not in (None, "none"):
                raise UsageError(f"--weights applies to transfer networks, not --arch "
                                 f"{cfg.arch} (trained from scratch)")
            cfg.weights = "none"
        elif cfg.weights is None:
            cfg.weights = "imagenet"
        elif cfg.weights not in ("imagenet", "none"):
            from digitkit.inputs import check_regular

            check_regular(cfg.weights)  # a weights FILE: there, and a regular file
        if cfg.val_fraction is not None and not 0 < cfg.val_fraction <= 0.5:
            raise UsageError("--val-fraction must be in (0, 0.5]")
        if cfg.resize not in RESIZE_MODES:
            raise UsageError(f"--resize must be one of {', '.join(RESIZE_MODES)}")
        if cfg.channels not in (None, 1, 3):
            raise UsageError("--channels must be 1 or 3")
        if cfg.workers is None:
            from digitkit.environment import usable_cpus

            cfg.workers = usable_cpus()
        return cfg


class FolderTrainer:
    """Trains one model on `root` into `out_dir`. Cheap to construct; `fit` does the work.
    `log(line)` hears the progress lines (data, balance), `warn(line)` the bad files
    skipped (default: `log`); `verbose` is Keras'."""

    def __init__(self, config: FolderConfig, root, out_dir, force: bool = False,
                 verbose: int = 2, log: Callable[[str], object] = lambda line: None,
                 warn: Callable[[str], object] | None = None):
        self.config = config
        self.root = str(root)
        self.out_dir = Path(out_dir)
        self.force = force
        self.verbose = verbose
        self.log = log
        self.warn = warn or log

    def check_output(self) -> None:
        """Refuse before spending minutes on training, not after."""
        out, root = self.out_dir.resolve(), Path(self.root).resolve()
        if out == root or root in out.parents:
            raise UsageError(f"{self.out_dir}: the output directory is inside {self.root}, "
                             f"where it would be read as a class folder; choose another --out")
        for name in FOLDER_ARTIFACTS:
            guard_output(self.out_dir / name, self.force)
        ensure_dir(self.out_dir)

    def prepare(self):
        """(resolved config, PixelPolicy, the input rule's words, FolderData): everything
        before TensorFlow is imported (decoding forks a pool; TensorFlow's threads must not
        exist yet)."""
        import tempfile

        import digitkit.train.folder_data as fd
        from digitkit.images.pixels import PixelPolicy

        cfg = self.config.resolved()
        arch = get_arch(cfg.arch, IMAGES)
        layout = fd.find_layout(self.root)
        names, files = fd.list_training_files(layout)
        size, channels, rule = fd.choose_input(
            fd.scan_headers(files), len(files), arch.transfer, cfg.input_size, cfg.channels)
        arch.check_size(*size)
        policy = PixelPolicy(size, channels, resize=cfg.resize)
        self.log(f"data: {layout.root}: {len(names)} classes, {len(files)} training files; "
                 f"input {size[0]}x{size[1]}x{channels} ({cfg.resize}); decoding on "
                 f"{cfg.workers} process{'es' if cfg.workers > 1 else ''}")
        self._cache = tempfile.TemporaryDirectory(prefix=".decoded.", dir=self.out_dir)
        decode = fd.Decoder(policy, cfg.workers, self._cache.name)
        t0 = time.perf_counter()
        data = fd.load_splits(layout, decode, cfg.val_fraction, cfg.seed)
        decode_seconds = time.perf_counter() - t0
        for path, reason in data.failures:
            self.warn(f"skipped {path}: {reason}")
        bal = data.balance()
        self.log("classes: " + ", ".join(f"{n} {c}" for n, c in bal["train"].items())
                 + f" (training images; largest/smallest {bal['largest_to_smallest']})")
        self.log(f"validation: {data.validation_source}"
                 + (f"; test: {len(data.test)} images" if data.test is not None else ""))
        caches = {id(s.pixels): s.pixels for s in (data.train, data.val, data.test) if s}
        cache = {"storage": "disk" if "disk" in decode.storage else "memory",
                 "bytes": int(sum(a.nbytes for a in caches.values())),
                 "decode_seconds": round(decode_seconds, 3), "workers": cfg.workers}
        return cfg, policy, rule, data, cache

    def fit(self) -> dict:
        self.check_output()
        t0 = time.perf_counter()
        try:
            cfg, policy, rule, data, cache = self.prepare()
            return self._fit(cfg, policy, rule, data, cache, t0)
        finally:
            if getattr(self, "_cache", None) is not None:
                self._cache.cleanup()

    def _fit(self, cfg, policy, rule, data, cache, t0) -> dict:
        from digitkit.model.loading import import_tensorflow

        tf = import_tensorflow("digitkit train")
        import keras

        from digitkit.architectures import backbone_of, build_model, compile_model
        from digitkit.model.contract import image_contract
        from digitkit.model.embedded import write_contract
        from digitkit.reports import (
            classification_report,
            report_dict,
            save_confusion_matrix_png,
            save_history_png,
        )
        from digitkit.train.mnist import _environment
        from digitkit.train.pipeline import batches, image_augment

        keras.utils.set_random_seed(cfg.seed)
        tf.config.experimental.enable_op_determinism()
        names = data.class_names
        h, w = policy.size
        model = build_model(cfg.arch, (h, w, policy.channels), len(names), cfg.weights)
        augment = image_augment(cfg.seed, cfg.flip) if cfg.augment else None
        train_ds = batches(data.train, cfg.batch_size, cfg.seed, True, augment)
        val_ds = batches(data.val, 256, cfg.seed, False)
        steps = math.ceil(len(data.train) / cfg.batch_size)

        epoch_times: list[float] = []

        class _Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                epoch_times.append(time.perf_counter() - self._t)

        backbone = backbone_of(model)
        phases = [("head" if backbone is not None else "all", cfg.epochs, cfg.learning_rate)]
        if backbone is not None and cfg.fine_tune_epochs:
            phases.append(("fine-tune", cfg.fine_tune_epochs,
                           cfg.learning_rate * FINE_TUNE_RATE))
        hist: dict[str, list[float]] = {}
        t_fit, done = time.perf_counter(), 0
        for phase, epochs, lr in phases:
            if backbone is not None:
                backbone.trainable = phase == "fine-tune"
            compile_model(model, lr, steps, epochs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                history = model.fit(train_ds, validation_data=val_ds, epochs=done + epochs,
                                    initial_epoch=done, verbose=self.verbose,
                                    callbacks=[_Timer()])
            for k, vals in history.history.items():
                hist.setdefault(k, []).extend(float(v) for v in vals)
            done += epochs
        fit_seconds = time.perf_counter() - t_fit

        evaluated = data.evaluated
        probs = model.predict(batches(evaluated, 256, cfg.seed, False).map(_pixels_only),
                              verbose=0)
        y_true, y_pred = evaluated.labels, probs.argmax(axis=1)
        loss = float(np.mean(-np.log(np.clip(probs[np.arange(len(y_true)), y_true],
                                             1e-12, 1.0))))
        acc = float(np.mean(y_pred == y_true))
        contract = image_contract(h, w, policy.channels, names, policy)
        record = {
            "digitkit_version": __version__,
            "config": {**asdict(cfg), "root": self.root},
            "data": {
                "root": self.root,
                "layout": "train/ val/ test/ folders" if data.layout.split
                          else "one subfolder per class",
                "classes": list(names),
                "train_images": len(data.train),
                "validation_images": len(data.val),
                "validation_source": data.validation_source,
                "test_images": len(data.test) if data.test is not None else 0,
                "balance": data.balance(),
                "bad_files": [{"path": p, "reason": r} for p, r in data.failures],
                "cache": cache,
            },
            "input": {"rule": rule, "pixel_policy": policy.to_dict()},
            "contract": contract.to_dict(),
            "history": hist,
            "phases": [{"name": p, "epochs": e, "learning_rate": lr} for p, e, lr in phases],
            "epoch_seconds": [round(t, 3) for t in epoch_times],
            "images_per_second": round(len(data.train) * done / fit_seconds, 1),
            "test": {"split": evaluated.name, "images": len(evaluated), "loss": loss,
                     "accuracy": acc, "report": report_dict(y_true, y_pred, names)},
            "model": {"file": FOLDER_MODEL_FILE, "parameters": int(model.count_params())},
            "environment": _environment(),
            "fit_seconds": round(fit_seconds, 3),
            "wall_seconds": None,  # filled in last, after every artifact is written
        }
        with atomic_path(self.out_dir / FOLDER_MODEL_FILE) as tmp:
            model.save(tmp)
            write_contract(tmp, contract)
        write_text_atomic(self.out_dir / "classification_report.txt",
                          classification_report(y_true, y_pred, names))
        save_history_png(hist, self.out_dir / "history.png",
                         title=f"{cfg.arch}: loss and accuracy per epoch")
        save_confusion_matrix_png(
            report_dict(y_true, y_pred, names)["confusion_matrix"],
            self.out_dir / "confusion_matrix.png", target_names=names,
            title=f"{cfg.arch} on {evaluated.name} images (accuracy {acc:.4f})")
        record["wall_seconds"] = round(time.perf_counter() - t0, 3)
        write_json_atomic(self.out_dir / RECORD_FILE, record)
        return record


def _pixels_only(x, y):
    return x


__all__ = ["FOLDER_ARTIFACTS", "FOLDER_MODEL_FILE", "FolderConfig", "FolderTrainer"]
