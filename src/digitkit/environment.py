"""The machine and the libraries a run used: CPUs this process may use, library versions.

Every record digitkit writes (train.json, export.json, bench JSON) names its versions through
`library_versions`, so the three never disagree about what "the environment" means.
"""

from __future__ import annotations

import os
import platform

from digitkit import __version__
from digitkit.errors import missing_extra

#: The extra that brings TensorFlow (train, export, the TensorFlow runtimes).
TENSORFLOW_EXTRA = "tensorflow"

#: Distributions worth naming in a record: the ones whose version changes a number we report.
RECORDED_PACKAGES = ("numpy", "onnx", "onnxruntime", "tensorflow-cpu", "tensorflow", "keras",
                     "tf2onnx", "opencv-python-headless", "pillow", "ray")


def usable_cpus() -> int:
    """CPUs this process may run on: honours taskset and cgroup affinity, unlike cpu_count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def library_versions(packages=RECORDED_PACKAGES) -> dict[str, str]:
    """Python, digitkit and every installed package of `packages` (absent ones are left out)."""
    from importlib import metadata  # here: `infer`'s main process needs only usable_cpus

    found = {"python": platform.python_version(), "digitkit": __version__}
    for dist in packages:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def import_tensorflow(what: str = "this command"):
    """Import TensorFlow quietly, or raise the one-line install hint."""
    # TF's C++ start-up chatter (oneDNN, CPU features) is noise on a command line.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as err:
        raise missing_extra(what, TENSORFLOW_EXTRA) from err
    return tf


def require_tensorflow(what: str = "this command") -> None:
    """Fail in one line, before any work, when the `tensorflow` extra is missing (finding the
    package costs microseconds; importing it costs seconds, paid later where it is used)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise missing_extra(what, TENSORFLOW_EXTRA)
