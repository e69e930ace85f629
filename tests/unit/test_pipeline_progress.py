"""The live push view: rows per blob with their outcome, and only in rich mode."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from hatch_jib import progress
from hatch_jib.console import PushProgress, live_progress, setup_console

CODE = "sha256:" + "1" * 64
BASE = "sha256:" + "2" * 64
DEPS = "sha256:" + "3" * 64


@pytest.fixture(autouse=True)
def _restore_jib_logger():
    """In-process builds set up the console; put the logger back for the tests after us."""
    logger = logging.getLogger("hatch_jib")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:] = saved[0]
    logger.propagate, logger.level = saved[1], saved[2]


def test_each_blob_gets_a_row_with_bytes_and_outcome():
    output = io.StringIO()
    display = PushProgress(Console(file=output, force_terminal=True, width=120))

    with display.progress:
        display(progress.BlobEvent(CODE, "checking", "code", 2048))
        display(progress.BlobEvent(CODE, "uploading", "code", 2048))
        display(progress.BlobEvent(CODE, "sent", done=1024))
        display(progress.BlobEvent(CODE, "sent", done=1024))
        display(progress.BlobEvent(CODE, "pushed", "code", 2048))
        display(progress.BlobEvent(BASE, "checking", "base", 10**6))
        display(progress.BlobEvent(BASE, "mounted", "base", 10**6))
        display(progress.BlobEvent(DEPS, "checking", "dependencies", 500))
        display(progress.BlobEvent(DEPS, "skipped", "dependencies", 500))

    final = output.getvalue().rsplit("\x1b[?25l", 1)[-1]
    assert "code         111111111111" in final and "pushed" in final
    assert "base         222222222222" in final and "mounted" in final
    assert "dependencies 333333333333" in final and "skipped" in final
    assert "2.0/2.0 KiB" in final


def test_a_restarted_upload_counts_from_zero_and_a_failed_one_says_so():
    output = io.StringIO()
    display = PushProgress(Console(file=output, force_terminal=True, width=120))

    with display.progress:
        display(progress.BlobEvent(CODE, "checking", "code", 2048))
        display(progress.BlobEvent(CODE, "uploading", "code", 2048))
        display(progress.BlobEvent(CODE, "sent", done=1536))
        display(progress.BlobEvent(CODE, "uploading"))  # a new session
        display(progress.BlobEvent(CODE, "sent", done=1024))
        display(progress.BlobEvent(CODE, "failed", "code", 2048))

    final = output.getvalue().rsplit("\x1b[?25l", 1)[-1]
    assert "1.0/2.0 KiB" in final and "failed" in final
    assert "2.5/2.0" not in final


def test_plain_mode_shows_no_live_view_and_listens_to_nothing(monkeypatch):
    monkeypatch.setenv("JIB_CONSOLE", "plain")
    setup_console("plain")

    with live_progress("plain") as display:
        listening = list(progress._listeners)

    assert display is None and listening == []


def test_rich_mode_listens_only_while_the_build_runs():
    setup_console("rich")

    with live_progress("rich") as display:
        listening = list(progress._listeners)

    assert display is not None and listening == [display]
    assert progress._listeners == []
    setup_console("plain")
