"""Blocking work (loading a model, asking a server what it serves) off the event loop, abandonable.

`asyncio.to_thread` cannot be interrupted: on Ctrl-C, `asyncio.run` waits for the worker
thread to finish, so a model that is loading or a server that does not answer holds the
program for as long as that takes. `in_thread` runs the work in a daemon thread instead:
cancelling the await returns at once, and the thread ends with the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def in_thread(work: Callable[..., T], *args: object) -> T:
    """`work(*args)` in a daemon thread; cancelling the await abandons the thread."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            outcome: tuple[T | None, BaseException | None] = (work(*args), None)
        except BaseException as exc:  # handed to the awaiting task
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(deliver, *outcome)

    threading.Thread(target=run, name=f"rsdchat-{getattr(work, '__name__', 'work')}", daemon=True).start()
    return await done
