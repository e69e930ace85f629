"""The hatch builder: `hatch build -t jib[:registry|tar|oci|docker]` runs the image build."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hatchling.builders.plugin.interface import BuilderInterface

from hatch_jib.console import debug_requested, report_failure, terminate_cleanly
from hatch_jib.errors import ConfigError

if TYPE_CHECKING:
    from hatch_jib.pipeline import BuildResult

__all__ = ["JibBuilder"]


class JibBuilder(BuilderInterface):
    """Builds an OCI/Docker image from the project; each target version is one output."""

    PLUGIN_NAME = "jib"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Hatch calls one version at a time; later ones reuse the first one's images.
        self._last_result: BuildResult | None = None

    def get_version_api(self) -> dict[str, Callable[..., str]]:
        return {
            "registry": self.build_registry,
            "tar": self.build_tar,
            "oci": self.build_oci,
            "docker": self.build_docker,
        }

    def build(
        self, *, directory: str | None = None, versions: list[str] | None = None, **options: Any
    ) -> Generator[str, None, None]:
        """Hatchling's build, after checking the versions (`-t jib:tarr`) ourselves: hatchling
        raises a ValueError for an unknown one, which hatch shows as a traceback."""
        outputs = "the outputs are registry, tar, oci and docker"
        where = "`hatch build -t jib:...`"
        try:
            if not versions:
                where = "`tool.hatch.build.targets.jib.versions`"
                versions = self.config.versions
            unknown = sorted(set(versions) - set(self.get_version_api()))
        except (TypeError, ValueError) as error:  # hatchling's own check of that key
            hint = f'{outputs}: write versions = ["tar"] or ["registry", "tar"]'
            failure = ConfigError(f"{where}: {error}", hint=hint)
            raise SystemExit(report_failure(failure, debug=False)) from None
        if unknown:
            failure = ConfigError(
                f"Unknown jib output {', '.join(map(repr, unknown))} in {where}",
                hint=f"{outputs}: -t jib:tar, -t jib:registry,tar; plain -t jib pushes, or "
                "writes a tar without to.image",
            )
            raise SystemExit(report_failure(failure, debug=False))
        yield from super().build(directory=directory, versions=versions, **options)

    def get_default_versions(self) -> list[str]:
        table = self.metadata.config.get("tool", {}).get("jib", {}) or {}
        to_image = os.environ.get("JIB_TO_IMAGE") or (table.get("to") or {}).get("image")
        return ["registry"] if to_image else ["tar"]

    def clean(self, directory: str, versions: list[str]) -> None:
        for path in Path(directory).glob("*.image.tar"):
            path.unlink()
        for path in Path(directory).glob("*.oci"):
            if path.is_dir():
                shutil.rmtree(path)

    def build_registry(self, directory: str, **build_data: Any) -> str:
        return self._build(directory, ("registry",))

    def build_tar(self, directory: str, **build_data: Any) -> str:
        return self._build(directory, ("tar",))

    def build_oci(self, directory: str, **build_data: Any) -> str:
        return self._build(directory, ("oci",))

    def build_docker(self, directory: str, **build_data: Any) -> str:
        return self._build(directory, ("docker",))

    def _build(self, directory: str, outputs: tuple[str, ...]) -> str:
        # Imported here: hatch imports this module whenever it loads third-party plugins (for
        # a build hook or a version source too), and only an image build needs the pipeline.
        from hatch_jib.build import build_project

        # Hatch shows a traceback for any exception, so every failure becomes a message and
        # an exit status: 1 for a failed build, 2 for bad configuration, as `hatch-jib` has.
        debug = debug_requested() or getattr(self.app, "verbosity", 0) >= 2
        try:
            with terminate_cleanly():
                result = build_project(
                    Path(self.root),
                    directory=Path(directory),
                    outputs=outputs,
                    debug=debug,
                    previous=self._last_result,
                )
        except (Exception, KeyboardInterrupt) as error:
            code = report_failure(error, debug=debug)
            sys.stderr.flush()
            raise SystemExit(code) from None
        self._last_result = result
        return str(result.artifacts[-1])
