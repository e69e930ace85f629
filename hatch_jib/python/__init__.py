"""Target-correct Python: detect the base's Python, resolve and install wheels, split layers."""

from __future__ import annotations

from hatch_jib.python.bytecode import compile_dists, should_compile
from hatch_jib.python.install import VENV, InstalledDist, create_venv, install_wheel
from hatch_jib.python.layout import extra_directory_layers, split_layers
from hatch_jib.python.local import build_local_wheels
from hatch_jib.python.lock import Requirements, collect_requirements
from hatch_jib.python.resolve import ResolvedWheel, download, resolve
from hatch_jib.python.target import PythonOverrides, TargetProfile, detect_target

__all__ = [
    "VENV",
    "InstalledDist",
    "PythonOverrides",
    "Requirements",
    "ResolvedWheel",
    "TargetProfile",
    "build_local_wheels",
    "collect_requirements",
    "compile_dists",
    "create_venv",
    "detect_target",
    "download",
    "extra_directory_layers",
    "install_wheel",
    "resolve",
    "should_compile",
    "split_layers",
]
