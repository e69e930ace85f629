"""Turns the library's log events into what the user sees: rich in a terminal, plain in CI."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

from hatch_jib.errors import JibError

__all__ = ["console_mode", "report_error", "setup_console"]

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
