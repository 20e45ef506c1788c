"""The train room: `digitkit train` on MNIST (`mnist.py`, the digit networks) or on any
labelled folder (`folder.py`: the trainer; `folder_data.py`: layout, splits, the input chosen
from the data, parallel decoding into a cache; `pipeline.py`: batches and augmentation)."""

from digitkit.train.folder import (
    FOLDER_ARTIFACTS,
    FOLDER_MODEL_FILE,
    FolderConfig,
    FolderTrainer,
)
from digitkit.train.mnist import (
    ARTIFACTS,
    MODEL_FILE,
    RECORD_FILE,
    TrainConfig,
    Trainer,
    _augment,
    _dataset,
)

__all__ = ["ARTIFACTS", "FOLDER_ARTIFACTS", "FOLDER_MODEL_FILE", "MODEL_FILE", "RECORD_FILE",
           "FolderConfig", "FolderTrainer", "TrainConfig", "Trainer", "_augment", "_dataset"]
