"""The machine and the libraries a run used: CPUs this process may use, library versions.

Every record digitkit writes (train.json, export.json, bench JSON) names its versions through
`library_versions`, so the three never disagree about what "the environment" means.
"""

from __future__ import annotations

import os
import platform

from digitkit import __version__

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
