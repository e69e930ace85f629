"""`hatch-jib build`: the same build as `hatch build -t jib`, with flags for CI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hatch_jib import __version__
from hatch_jib.build import build_project
from hatch_jib.console import report_error
from hatch_jib.errors import ConfigError, JibError

__all__ = ["main"]

_EXAMPLES = """\
examples:
  hatch-jib build --to registry.example.com/team/app --tag 1.2.0 --tag latest
  hatch-jib build path/to/project --tar
  hatch-jib build --to registry.example.com/team/app --tar --oci --docker
  hatch-jib build --platform linux/amd64 --platform linux/arm64 --oci
  JIB_TO_AUTH_USERNAME=ci JIB_TO_AUTH_PASSWORD=$TOKEN hatch-jib build --plain
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hatch-jib",
        description="Build reproducible OCI/Docker images from Python projects, without Docker.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hatch-jib {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser(
        "build",
        help="build the project's image",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("project", nargs="?", default=".", help="project directory (default: .)")
    build.add_argument("--to", metavar="IMAGE", help="target image (overrides to.image)")
    build.add_argument("--tag", action="append", metavar="TAG", help="tag to push (repeatable)")
    build.add_argument("--from", dest="from_image", metavar="IMAGE", help="base image")
    build.add_argument("--platform", action="append", metavar="OS/ARCH", help="target platform")
    # Output flags combine: the image is built once and written to each.
    outputs = build.add_argument_group("outputs (default: --registry with --to, else --tar)")
    outputs.add_argument("--registry", action="store_true", help="push to the target image")
    outputs.add_argument("--tar", action="store_true", help="write a docker-archive tar to dist/")
    outputs.add_argument("--oci", action="store_true", help="write an OCI image layout to dist/")
    outputs.add_argument("--docker", action="store_true", help="load into the Docker daemon")
    build.add_argument("--offline", action="store_true", default=None, help="use only the cache")
    build.add_argument("--plain", action="store_true", help="plain log lines, no live display")
    build.add_argument("--debug", action="store_true", help="show tracebacks and HTTP exchanges")
    build.add_argument(
        "--output-dir", type=Path, metavar="DIR", help="where to write results (default: dist/)"
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "to.image": args.to,
        "to.tags": args.tag,
        "from.image": args.from_image,
        "from.platforms": args.platform,
        "offline": args.offline,
        "console": "plain" if args.plain else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 1 build failure, 2 bad configuration)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)

    root = Path(args.project).resolve()
    outputs = tuple(
        name for name in ("registry", "tar", "oci", "docker") if getattr(args, name, False)
    )
    try:
        if not root.is_dir():
            raise ConfigError(f"Project directory {args.project} does not exist")
        build_project(
            root,
            directory=args.output_dir or root / "dist",
            outputs=outputs or None,
            overrides=_overrides(args),
            debug=args.debug,
        )
    except JibError as error:
        if args.debug:
            raise
        report_error(error)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
