"""The hatch builder: `hatch build -t jib[:registry|tar]` runs the image build."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hatchling.builders.plugin.interface import BuilderInterface

from hatch_jib.build import build_project
from hatch_jib.console import report_error
from hatch_jib.errors import JibError

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
        # Hatch shows a traceback for any exception, so a user error exits with a message.
        try:
            result = build_project(Path(self.root), directory=Path(directory), outputs=outputs)
        except JibError as error:
            report_error(error)
            sys.stderr.flush()
            raise SystemExit(error.exit_code) from None
        return str(result.artifacts[-1])
