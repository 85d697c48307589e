"""A terminal driver that keeps drawing while llama.cpp loads a model.

llama-cpp-python (with verbose=False) silences a model load by pointing the process's
file descriptors 1 and 2 at /dev/null for the duration. Textual draws on fd 2, so the
screen would freeze for the seconds a load takes, and what it drew meanwhile would be
lost. This driver draws on its own duplicate of fd 2, which the redirection leaves alone.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from textual.driver import Driver


def driver_class(default: type[Driver]) -> type[Driver]:
    """`default` with a private copy of the terminal for output (Linux and macOS drivers only)."""
    try:
        from textual.drivers.linux_driver import LinuxDriver
    except ImportError:  # Windows
        return default
    if not issubclass(default, LinuxDriver) or sys.__stderr__ is None:
        return default

    class OwnTerminalDriver(default):  # type: ignore[valid-type,misc]
        def __init__(self, app: Any, **kwargs: Any) -> None:
            super().__init__(app, **kwargs)
            stderr = sys.__stderr__
            assert stderr is not None
            self._own: IO[str] | None = None
            try:
                self._own = os.fdopen(
                    os.dup(stderr.fileno()), "w", encoding=stderr.encoding, errors="replace"
                )
            except (OSError, ValueError):  # no real terminal: draw where Textual would
                return
            self._file = self._own

        def close(self) -> None:
            super().close()
            if self._own is not None:
                self._own.close()

    return OwnTerminalDriver
