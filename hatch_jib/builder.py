"""The hatch builder: `hatch build -t jib[:registry|tar]` runs the image build."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hatchling.builders.plugin.interface import BuilderInterface

from hatch_jib.build import build_project
from hatch_jib.console import debug_requested, report_failure

__all__ = ["JibBuilder"]


class JibBuilder(BuilderInterface):
    """Builds an OCI/Docker image from the project; each target version is one output."""

    PLUGIN_NAME = "jib"

    def get_version_api(self) -> dict[str, Callable[..., str]]:
        return {"registry": self.build_registry, "tar": self.build_tar}

    def get_default_versions(self) -> list[str]:
        table = self.metadata.config.get("tool", {}).get("jib", {}) or {}
        to_image = os.environ.get("JIB_TO_IMAGE") or (table.get("to") or {}).get("image")
        return ["registry"] if to_image else ["tar"]

    def clean(self, directory: str, versions: list[str]) -> None:
        for path in Path(directory).glob("*.image.tar"):
            path.unlink()

    def build_registry(self, directory: str, **build_data: Any) -> str:
        return self._build(directory, ("registry",))

    def build_tar(self, directory: str, **build_data: Any) -> str:
        return self._build(directory, ("tar",))

    def _build(self, directory: str, outputs: tuple[str, ...]) -> str:
        # Hatch shows a traceback for any exception, so every failure becomes a message and
        # an exit status: 1 for a failed build, 2 for bad configuration, as `hatch-jib` has.
        debug = debug_requested() or getattr(self.app, "verbosity", 0) >= 2
        try:
            result = build_project(
                Path(self.root), directory=Path(directory), outputs=outputs, debug=debug
            )
        except (Exception, KeyboardInterrupt) as error:
            code = report_failure(error, debug=debug)
            sys.stderr.flush()
            raise SystemExit(code) from None
        return str(result.artifacts[-1])
