"""What a backend says while it starts: a server launched, ready, where its log is.

A plugin says a line with `PROGRESS.info(line)`, from any thread. The command line prints
each line on stderr (`print_on_stderr`); the chat app shows them in the conversation while
its models load (`progress_to`), where stderr is not the terminal's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PROGRESS = logging.getLogger("rsdchat.progress")
PROGRESS.setLevel(logging.INFO)
PROGRESS.propagate = False  # the application's own logging does not print them twice


class _ToStderr(logging.Handler):
    """Writes to whatever `sys.stderr` is at the time (the chat app captures it while it runs)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(record.getMessage(), file=sys.stderr, flush=True)


def print_on_stderr() -> None:
    """Print every progress line on stderr from now on (once, however often it is called)."""
    if not any(isinstance(handler, _ToStderr) for handler in PROGRESS.handlers):
        PROGRESS.addHandler(_ToStderr())


class _ToLoop(logging.Handler):
    def __init__(self, sink: Callable[[str], None], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.sink, self.loop = sink, loop

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(RuntimeError):  # its loop closed without leaving the block: nobody to tell
            self.loop.call_soon_threadsafe(self.sink, record.getMessage())


@contextmanager
def progress_to(sink: Callable[[str], None]) -> Iterator[None]:
    """Hand each progress line to `sink` on the running event loop while the block runs."""
    for stale in [h for h in PROGRESS.handlers if isinstance(h, _ToLoop) and h.loop.is_closed()]:
        PROGRESS.removeHandler(stale)  # of a chat whose loop ended without closing it
    handler = _ToLoop(sink, asyncio.get_running_loop())
    PROGRESS.addHandler(handler)
    try:
        yield
    finally:
        PROGRESS.removeHandler(handler)
