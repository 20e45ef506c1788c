"""What `--device` names (bench and infer): the kinds, their canonical form, their parts.

Its own module, below the runtime table and the predictors that read it (`runtimes.py`,
`ort.py`, `openvino.py`), so that none of them imports another for it. Pure Python.
"""

from __future__ import annotations

from digitkit.errors import UsageError

#: What `--device` takes (bench and infer): kind -> what it means. A kind may carry an index
#: (`cuda:1`); the runtime rows say which kinds they run on (`Runtime.devices`), and the
#: runtime's own module decides how (ONNX Runtime's provider list: `ort.providers`;
#: OpenVINO's device name: `openvino.device_name`) and refuses one that is not there.
DEVICES = {
    "cpu": "the CPU (the default)",
    "cuda": "an NVIDIA GPU through ONNX Runtime's CUDA provider (onnxruntime-gpu)",
    "tensorrt": "an NVIDIA GPU through ONNX Runtime's TensorRT provider (onnxruntime-gpu)",
    "gpu": "the runtime's GPU: CUDA for ONNX Runtime, the GPU plugin for OpenVINO",
}
DEFAULT_DEVICE = "cpu"


def parse_device(text: str | None) -> str:
    """`--device` as typed -> its canonical form ("cpu", "cuda:0", "gpu", "gpu:1", ...);
    UsageError naming the choices for anything else."""
    raw = (text or DEFAULT_DEVICE).strip().lower()
    kind, sep, index = raw.partition(":")
    if kind not in DEVICES or (sep and (kind == "cpu" or not index.isdigit())):
        raise UsageError(f"--device: {text!r} is not a device; choose from cpu, cuda[:N], "
                         "tensorrt[:N], gpu[:N]")
    return f"{kind}:{int(index)}" if sep else kind


def device_kind(device: str) -> str:
    return device.partition(":")[0]


def device_index(device: str) -> int:
    """The device's index (`cuda:1` -> 1); 0 when none is given."""
    _, _, index = device.partition(":")
    return int(index) if index else 0
