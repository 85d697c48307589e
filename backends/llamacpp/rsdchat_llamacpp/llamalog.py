"""llama.cpp's log, hushed once per process: no loader chatter on the terminal, errors still heard.

llama.cpp (and ggml under it) says everything through one log callback: a model load alone
is some 200 lines of metadata and tensor counts. `hush` sets rsdchat's callback once, before
any model loads, and it stays: it drops every line below ERROR and hands error lines to the
`llama.cpp` logger (what the program does with its `logging`: without a handler, stderr) or,
inside `errors_of_this_thread`, to the caller, which puts them in its own error message.

llama-cpp-python's own way of being quiet, `Llama(verbose=False)`, points file descriptors 1
and 2 at /dev/null around each load. That is process-wide: it blanks a UI drawing meanwhile,
and two loads at once can leave them pointing there for good. `hush` turns that off too: with
the callback in place there is nothing left for it to hide.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator
from typing import Any

LLAMA_LOG = logging.getLogger("llama.cpp")

# enum ggml_log_level as llama-cpp-python 0.3.36 builds it: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4,
# CONT 5 (more of the line before). Its own callback (llama_cpp/_logger.py) still reads the older
# order (ERROR 3), so it showed warnings and hid errors.
_ERROR, _CONT = 4, 5
_LOCK = threading.Lock()
_CALLBACK: Any = None  # llama.cpp keeps only a pointer: this reference keeps the ctypes callback alive
_thread = threading.local()  # per thread: the level of the last line, an unfinished error line, a sink


def hush() -> None:
    """Set rsdchat's log callback in llama.cpp (once per process; safe from any thread)."""
    global _CALLBACK
    with _LOCK:
        if _CALLBACK is not None:
            return
        import llama_cpp  # sets llama-cpp-python's callback, which prints everything on sys.stderr
        import llama_cpp._internals
        import llama_cpp.llama

        callback = llama_cpp.llama_log_callback(_on_log)
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
        for module in (llama_cpp.llama, llama_cpp._internals):  # what `Llama(verbose=False)` calls
            setattr(module, "suppress_stdout_stderr", _leave_streams)  # noqa: B010 (a function, patched)
        _CALLBACK = callback


@contextlib.contextmanager
def errors_of_this_thread() -> Iterator[list[str]]:
    """The error lines llama.cpp logs from this thread while the block runs, given to the caller."""
    lines: list[str] = []
    outer = getattr(_thread, "errors", None)
    _thread.errors = lines
    try:
        yield lines
    finally:
        _thread.errors = outer


def _leave_streams(disable: bool = True) -> contextlib.nullcontext[None]:
    """Stands in for llama-cpp-python's `suppress_stdout_stderr`: stdout and stderr left alone."""
    return contextlib.nullcontext()


def _on_log(level: int, text: bytes | None, _user_data: Any) -> None:
    with contextlib.suppress(Exception):  # nothing may be raised back into llama.cpp
        pending: str = getattr(_thread, "pending", "")  # an error line not yet ended
        if level != _CONT:
            _thread.level, _thread.pending = level, ""
            _say(pending)  # a new line began: the unfinished one is all there is of it
            pending = ""
        if getattr(_thread, "level", 0) != _ERROR or not text:
            return
        *lines, _thread.pending = (pending + text.decode("utf-8", "replace")).split("\n")
        for line in lines:
            _say(line)


def _say(line: str) -> None:
    line = line.strip()
    if not line:
        return
    errors: list[str] | None = getattr(_thread, "errors", None)
    if errors is not None:
        errors.append(line)
    else:
        LLAMA_LOG.error("llama.cpp: %s", line)
