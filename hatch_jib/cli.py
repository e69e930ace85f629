"""`hatch-jib`: the build of `hatch build -t jib` for CI, plus `inspect` and `cache prune`."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hatch_jib import __version__
from hatch_jib.build import build_project, check_project, load_build_config
from hatch_jib.cache import BlobStore, default_cache_dir, explained_file_system_errors
from hatch_jib.config import format_config
from hatch_jib.console import (
    EXIT_OK,
    debug_requested,
    report_failure,
    setup_console,
    terminate_cleanly,
)
from hatch_jib.errors import ConfigError
from hatch_jib.image.descriptor import human_size
from hatch_jib.image.reference import parse_reference
from hatch_jib.registry.transport import TransportOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["main", "parse_size"]

log = logging.getLogger("hatch_jib")

_BUILD_EXAMPLES = """\
examples:
  hatch-jib build --to registry.example.com/team/app --tag 1.2.0 --tag latest
  hatch-jib build path/to/project --tar
  hatch-jib build --to registry.example.com/team/app --tar --oci --docker
  hatch-jib build --platform linux/amd64 --platform linux/arm64 --oci
  JIB_TO_AUTH_USERNAME=ci JIB_TO_AUTH_PASSWORD=$TOKEN hatch-jib build --plain
  hatch-jib build --to ghcr.io/team/app --print-config     # show what would be used

exit status: 0 built, 1 the build failed, 2 bad configuration or usage
"""
_INSPECT_EXAMPLES = """\
examples:
  hatch-jib inspect registry.example.com/team/app:1.2.0
  hatch-jib inspect --raw 127.0.0.1:5000/app@sha256:...     # the manifest as sent
"""
_PRUNE_EXAMPLES = """\
examples:
  hatch-jib cache prune --older-than 30        # blobs unused for 30 days
  hatch-jib cache prune --max-size 5G          # least recently used first, down to 5 GiB
"""
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", re.IGNORECASE)

Handler = Callable[[argparse.Namespace, bool], int]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hatch-jib",
        description="Build reproducible OCI/Docker images from Python projects, without Docker.",
        epilog=_BUILD_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hatch-jib {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        help="show tracebacks and the HTTP exchange, secrets redacted (or JIB_DEBUG=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_build(commands, common)
    _add_inspect(commands, common)
    _add_cache(commands, common)
    return parser


def _add_build(commands: Any, common: argparse.ArgumentParser) -> None:
    build = commands.add_parser(
        "build",
        parents=[common],
        help="build the project's image",
        description="Build the project's image: the same build as `hatch build -t jib`.",
        epilog=_BUILD_EXAMPLES,
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
    build.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration with each key's source, then exit",
    )
    build.add_argument(
        "--output-dir", type=Path, metavar="DIR", help="where to write results (default: dist/)"
    )
    build.set_defaults(handler=_build)


def _add_inspect(commands: Any, common: argparse.ArgumentParser) -> None:
    inspect = commands.add_parser(
        "inspect",
        parents=[common],
        help="show an image's manifest, platforms and layers",
        description="Show what a registry holds for IMAGE: digest, platforms, layers, sizes.",
        epilog=_INSPECT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect.add_argument("image", metavar="IMAGE", help="image reference")
    inspect.add_argument("--raw", action="store_true", help="print the manifest JSON as sent")
    inspect.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST",
        help="allow plain HTTP to HOST (loopback always is; or JIB_ALLOW_INSECURE_REGISTRIES)",
    )
    inspect.set_defaults(handler=_inspect)


def _add_cache(commands: Any, common: argparse.ArgumentParser) -> None:
    cache = commands.add_parser("cache", help="manage the blob cache")
    actions = cache.add_subparsers(dest="action", required=True, metavar="ACTION")
    prune = actions.add_parser(
        "prune",
        parents=[common],
        help="remove old or excess blobs from the cache",
        description="Remove cached blobs unused for DAYS, then the least recently used ones "
        "until the cache fits in SIZE. Waits for running builds to finish.",
        epilog=_PRUNE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prune.add_argument("--older-than", type=float, metavar="DAYS", help="unused for DAYS days")
    prune.add_argument("--max-size", metavar="SIZE", help="keep at most SIZE (e.g. 500M, 5G)")
    prune.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="default: JIB_CACHE_DIR, else the `cache-dir` of ./pyproject.toml, else the user "
        "cache directory",
    )
    prune.add_argument(
        "--wait", type=float, default=60.0, metavar="SECONDS", help="wait for running builds"
    )
    prune.set_defaults(handler=_prune)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 1 build failure, 2 bad configuration)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)

    debug = args.debug or debug_requested()
    setup_console("plain" if getattr(args, "plain", False) else None, debug=debug)
    handler: Handler = args.handler
    try:
        with terminate_cleanly():
            return handler(args, debug)
    except (Exception, KeyboardInterrupt) as error:
        return report_failure(error, debug=debug)


def _build(args: argparse.Namespace, debug: bool) -> int:
    root = Path(args.project).resolve()
    if not (root / "pyproject.toml").is_file():
        raise ConfigError(
            f"No pyproject.toml in {args.project}",
            hint="run from the project directory or pass its path: hatch-jib build PATH",
        )
    if args.print_config:
        project, config = load_build_config(root, overrides=_overrides(args))
        check_project(project, config)
        # The warnings a build would give, on stderr: stdout is the configuration alone.
        for warning in config.warnings:
            log.warning("%s", warning)
        sys.stdout.write(format_config(config))
        return EXIT_OK
    outputs = tuple(name for name in ("registry", "tar", "oci", "docker") if getattr(args, name))
    build_project(
        root,
        directory=args.output_dir or root / "dist",
        outputs=outputs or None,
        overrides=_overrides(args),
        debug=debug,
    )
    return EXIT_OK


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "to.image": args.to,
        "to.tags": args.tag,
        "from.image": args.from_image,
        "from.platforms": args.platform,
        "offline": args.offline,
        "console": "plain" if args.plain else None,
    }


def _inspect(args: argparse.Namespace, debug: bool) -> int:
    # Imported here: a build, the usual command, needs none of it.
    from hatch_jib.inspection import format_report, inspect_image

    reference = parse_reference(args.image, key="IMAGE")
    listed = os.environ.get("JIB_ALLOW_INSECURE_REGISTRIES", "")
    hosts = {host.strip() for host in listed.split(",") if host.strip()}
    options = TransportOptions(insecure_hosts=frozenset(hosts | set(args.insecure_registry)))
    report = inspect_image(reference, options=options)
    if args.raw:
        sys.stdout.write(report.raw.decode() + ("" if report.raw.endswith(b"\n") else "\n"))
    else:
        sys.stdout.write(format_report(report))
    return EXIT_OK


def _prune(args: argparse.Namespace, debug: bool) -> int:
    if args.older_than is None and args.max_size is None:
        raise ConfigError(
            "`cache prune` needs --older-than DAYS, --max-size SIZE or both",
            hint="for example: hatch-jib cache prune --older-than 30",
        )
    if args.older_than is not None and args.older_than < 0:
        raise ConfigError(f"--older-than {args.older_than:g} must not be negative")
    max_size = parse_size(args.max_size, "--max-size") if args.max_size is not None else None
    root = (
        args.cache_dir
        or (Path(os.environ["JIB_CACHE_DIR"]) if os.environ.get("JIB_CACHE_DIR") else None)
        or _project_cache_dir(Path.cwd())
        or default_cache_dir()
    )
    if not (root / "blobs").is_dir():
        sys.stdout.write(f"No hatch-jib cache at {root}: nothing to prune\n")
        return EXIT_OK

    with explained_file_system_errors(cache_dir=root):
        report = BlobStore(root).prune(
            older_than=None if args.older_than is None else args.older_than * 86400,
            max_size=max_size,
            wait=args.wait,
        )
    for blob in report.removed:
        sys.stdout.write(f"removed {blob.digest}  {human_size(blob.size)}\n")
    sys.stdout.write(
        f"Removed {len(report.removed)} blob(s), {human_size(report.freed_bytes)}; "
        f"{report.kept} blob(s), {human_size(report.kept_bytes)} left in {root}\n"
    )
    if report.leftover_bytes:
        sys.stdout.write(
            f"Removed {human_size(report.leftover_bytes)} of temporary files that stopped"
            " builds left\n"
        )
    return EXIT_OK


def _project_cache_dir(root: Path) -> Path | None:
    """`tool.jib.cache-dir` of the project in `root`, the cache its builds use."""
    try:
        table = tomllib.loads((root / "pyproject.toml").read_text())
    except (OSError, ValueError):
        return None
    value = table.get("tool", {}).get("jib", {}).get("cache-dir")
    return root / value if isinstance(value, str) and value else None


def parse_size(text: str, option: str = "size") -> int:
    """`500M`, `5G`, `1.5GiB`, `1024` (bytes) -> bytes; binary units."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ConfigError(
            f"{option} {text!r} is not a size", hint="write bytes or a size like 500M or 5G"
        )
    power = " KMGT".index((match[2] or " ").upper())
    return int(float(match[1]) * 1024**power)


if __name__ == "__main__":
    sys.exit(main())
