"""Turns the library's log events into what the user sees: rich in a terminal, plain in CI."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, TextIO

from hatch_jib import progress
from hatch_jib.errors import JibError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

__all__ = [
    "EXIT_BUILD_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "PushProgress",
    "Terminated",
    "console_mode",
    "debug_requested",
    "live_progress",
    "report_error",
    "report_failure",
    "setup_console",
    "terminate_cleanly",
]

# The exit codes every front end uses: `hatch-jib` and `hatch build -t jib` alike.
EXIT_OK, EXIT_BUILD_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as shells report it

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


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI job cancelled) arrived: unwind like Ctrl-C, so temp files are removed."""


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """Turn SIGTERM into `Terminated` in the main thread while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    if isinstance(error, Terminated):
        stream.write("error: terminated\n")
        return EXIT_TERMINATED
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


class PushProgress:
    """A live view of blob pushes: one row per blob with a byte bar and its outcome."""

    _FINAL = ("pushed", "skipped", "mounted")

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),  # the units of the log lines
            TextColumn("{task.fields[state]}"),
            console=console,
        )
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def __call__(self, event: progress.BlobEvent) -> None:
        # Events arrive from the push pool's threads.
        with self._lock:
            task = self._tasks.get(event.digest)
            if event.state == "sent":
                if task is not None:
                    self.progress.advance(task, event.done)
                return
            if task is None:
                label = f"{event.name:<12} {event.digest.partition(':')[2][:12]}"
                task = self.progress.add_task(label, total=event.size, state=event.state)
                self._tasks[event.digest] = task
            if event.state in self._FINAL:
                self.progress.update(task, completed=event.size, state=event.state)
            elif event.state in ("failed", "cancelled"):
                self.progress.update(task, state=event.state)  # the bytes it got to
            else:
                # A restarted upload starts its byte count again.
                self.progress.update(task, completed=0, state=event.state)


def _rich_console() -> Console | None:
    """The console of the rich log handler, so log lines print above the live view."""
    for handler in logging.getLogger("hatch_jib").handlers:
        console = getattr(handler, "console", None)
        if getattr(handler, _HANDLER_FLAG, False) and console is not None:
            return console  # type: ignore[no-any-return]
    return None


@contextlib.contextmanager
def live_progress(mode: str | None = None) -> Iterator[PushProgress | None]:
    """Show pushes live in rich mode; in plain mode the log lines say it all."""
    console = _rich_console()
    if console_mode(mode) != "rich" or console is None:
        yield None
        return
    display = PushProgress(console)
    unsubscribe = progress.subscribe(display)
    try:
        with display.progress:
            yield display
    finally:
        unsubscribe()
