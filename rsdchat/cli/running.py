"""Running a command's async work: Ctrl-C and SIGTERM stop it the same way, exit 130, no traceback."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer
from rich.console import Console

T = TypeVar("T")


async def _stoppable(work: Coroutine[Any, Any, T]) -> T:
    """`work`, cancelled by SIGTERM exactly as asyncio cancels it on Ctrl-C (its cleanup runs).

    SIGTERM cancels the task itself rather than being turned into SIGINT: a command started
    in the background by a shell (`rsdchat eval … &`) inherits SIGINT ignored.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, terminate)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no such signals
        return await work
    try:
        return await work
    except asyncio.CancelledError:
        if terminated:
            raise KeyboardInterrupt from None
        raise
    finally:
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(signal.SIGTERM)


def run(work: Coroutine[Any, Any, T], *, interrupted: str = "interrupted") -> T:
    """Run `work` to the end; on Ctrl-C or SIGTERM, cancel it (its cleanup runs), say so, exit 130."""
    try:
        return asyncio.run(_stoppable(work))
    except KeyboardInterrupt:
        Console(stderr=True).print(f"[yellow]{interrupted}[/yellow]", highlight=False)
        raise typer.Exit(130) from None
