"""Running a command's async work: Ctrl-C and SIGTERM stop it the same way, exit 130, no traceback."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer
from rich.console import Console

T = TypeVar("T")


def _terminate(signum: int, frame: object) -> None:
    signal.raise_signal(signal.SIGINT)  # SIGTERM stops the work exactly as Ctrl-C does


def run(work: Coroutine[Any, Any, T], *, interrupted: str = "interrupted") -> T:
    """Run `work` to the end; on Ctrl-C or SIGTERM, cancel it (its cleanup runs), say so, exit 130."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return asyncio.run(work)
    except KeyboardInterrupt:
        Console(stderr=True).print(f"[yellow]{interrupted}[/yellow]", highlight=False)
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
