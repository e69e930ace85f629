"""Target-correct Python: detect the base's Python, resolve and install wheels, split layers."""

from __future__ import annotations

from hatch_jib.python.install import VENV, InstalledDist, create_venv, install_wheel
from hatch_jib.python.layout import split_layers
from hatch_jib.python.resolve import ResolvedWheel, download, resolve
from hatch_jib.python.target import PythonOverrides, TargetProfile, detect_target

__all__ = [
    "VENV",
    "InstalledDist",
    "PythonOverrides",
    "ResolvedWheel",
    "TargetProfile",
    "create_venv",
    "detect_target",
    "download",
    "install_wheel",
    "resolve",
    "split_layers",
]
