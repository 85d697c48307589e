"""Running the app: uvicorn, stopped our way (SIGTERM or Ctrl-C drains the answers, then exits)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Generator

import uvicorn
from rich.console import Console

from rsdchat.core.errors import ConfigError
from rsdchat.core.policy import Mode
from rsdchat.runtime import open_runtime
from rsdchat.serve.answering import Limits, Server
from rsdchat.serve.app import make_app
from rsdchat.settings import Settings


async def serve(settings: Settings, limits: Limits, host: str, port: int, grace: float, err: Console) -> int:
    """Load the models, serve until SIGTERM or Ctrl-C, drain, close; the exit code (130 after Ctrl-C)."""
    with err.status(f"loading models: draft {settings.draft}, target {settings.target}…", spinner="dots"):
        runtime = await open_runtime(settings, Mode.RSD)  # every served model: both models and the reward
    try:
        server = Server(runtime, limits)
        config = uvicorn.Config(
            make_app(server),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        web = Web(config, server, grace)
        err.print(
            f"serving on http://{host}:{port}/v1 (models: rsd, rsd-target-only, rsd-draft-only); "
            "Ctrl-C stops",
            highlight=False,
        )
        await web.serve()
        if not web.started:
            raise ConfigError(
                f"could not listen on {host}:{port} (in use, or not an address of this machine?)"
            )
        err.print("stopped", highlight=False)
        return 130 if web.stopped_by == signal.SIGINT else 0
    finally:
        await runtime.aclose()


class Web(uvicorn.Server):
    """uvicorn's server; the first SIGTERM or Ctrl-C drains the answers and stops, a second stops at once."""

    def __init__(self, config: uvicorn.Config, rsd: Server, grace: float) -> None:
        super().__init__(config)
        self.rsd, self.grace = rsd, grace
        self.stopped_by: int | None = None
        self._draining: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        await super().serve(sockets)
        if self._draining is not None:
            await self._draining

    def stop(self, sig: int) -> None:
        if self._draining is not None:
            self.force_exit = self.should_exit = True
            return
        self.stopped_by = sig

        async def drain() -> None:
            await self.rsd.drain(self.grace)
            self.should_exit = True

        self._draining = asyncio.ensure_future(drain())
