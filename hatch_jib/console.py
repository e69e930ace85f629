"""Turns the library's log events into what the user sees: rich in a terminal, plain in CI."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Mapping
from typing import TextIO

from hatch_jib.errors import JibError

__all__ = [
    "EXIT_BUILD_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "console_mode",
    "debug_requested",
    "report_error",
    "report_failure",
    "setup_console",
]

# The exit codes every front end uses: `hatch-jib` and `hatch build -t jib` alike.
EXIT_OK, EXIT_BUILD_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_HANDLER_FLAG = "_hatch_jib_console"


def console_mode(requested: str | None = None, stream: TextIO | None = None) -> str:
    """`plain` when asked, in CI or without a terminal; `rich` otherwise."""
    stream = stream or sys.stderr
    choice = requested or os.environ.get("JIB_CONSOLE")
    if choice in ("plain", "rich"):
        return choice
    if os.environ.get("CI") or not stream.isatty():
        return "plain"
    return "rich"


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"[jib] {record.levelname.lower()}: {message}"
        return f"[jib] {message}"


def setup_console(mode: str | None = None, *, debug: bool = False) -> None:
    """Attach one handler to the `hatch_jib` logger (idempotent)."""
    logger = logging.getLogger("hatch_jib")
    for existing in list(logger.handlers):
        if getattr(existing, _HANDLER_FLAG, False):
            logger.removeHandler(existing)

    handler: logging.Handler
    if console_mode(mode) == "rich":
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(
            console=Console(stderr=True), show_time=False, show_path=False, markup=False
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_PlainFormatter())
    setattr(handler, _HANDLER_FLAG, True)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False


def report_error(error: JibError, stream: TextIO | None = None) -> None:
    """Print a user-facing error as one or two lines."""
    stream = stream or sys.stderr
    stream.write(f"error: {error.message}\n")
    if error.hint:
        stream.write(f"  hint: {error.hint}\n")
    stream.flush()


def debug_requested(environ: Mapping[str, str] | None = None) -> bool:
    """True when `JIB_DEBUG` is set to a true value (how `hatch build` users ask for it)."""
    value = (os.environ if environ is None else environ).get("JIB_DEBUG", "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def report_failure(error: BaseException, *, debug: bool, stream: TextIO | None = None) -> int:
    """Show a failure the way its kind deserves and return the exit code.

    A user error (JibError) is its one or two lines. An unexpected exception is a bug in
    hatch-jib: the user gets one line and the path of a file holding the traceback, to rerun
    with --debug or attach to a report. `debug` adds the traceback to the terminal for both.
    """
    stream = stream or sys.stderr
    if debug:
        traceback.print_exception(type(error), error, error.__traceback__, file=stream)
    if isinstance(error, JibError):
        report_error(error, stream)
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        stream.write("error: interrupted\n")
        return EXIT_INTERRUPTED
    crash_file = None if debug else _write_traceback(error)
    stream.write(f"error: internal error in hatch-jib: {type(error).__name__}: {error}\n")
    where = f"the traceback is in {crash_file}; " if crash_file else ""
    stream.write(
        f"  hint: this is a bug; {where}rerun with --debug (JIB_DEBUG=1 under hatch build)"
        " and report it with that output\n"
    )
    stream.flush()
    return EXIT_BUILD_FAILED


def _write_traceback(error: BaseException) -> str | None:
    try:
        with tempfile.NamedTemporaryFile(
            "w", prefix="hatch-jib-crash-", suffix=".txt", delete=False
        ) as handle:
            traceback.print_exception(type(error), error, error.__traceback__, file=handle)
        return handle.name
    except OSError:
        return None
