"""Sleep mode: servers that do not fit on the GPU together take turns on it.

With `sleep_mode`, every server is started with `--enable-sleep-mode` and put to sleep
once it is ready (vLLM's level 1: weights moved to CPU memory, KV cache freed), so the
next one finds the memory free while it starts. Before a request, the server it goes
to is woken and every other one put to sleep; requests to the awake server run side
by side, a switch waits until they are done. Each switch moves weights: this is for
models that would not run at all otherwise, not for speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx

from rsdchat.plugin_api import BackendError
from rsdchat_vllm.process import Server

TIMEOUT = 300.0  # seconds a sleep or a wake-up may take (weights move over PCIe)
HOW = "sleep_mode needs a vLLM that has sleep mode (0.8 or later)"


def sleep_now(server: Server) -> None:
    """Put a server that just started to sleep (blocking)."""
    try:
        response = httpx.post(f"{server.url}/sleep", params={"level": 1}, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        raise _refused(server, "sleep", type(exc).__name__) from None
    if response.status_code >= 400:
        raise _refused(server, "sleep", f"HTTP {response.status_code}")
    server.asleep = True


def _refused(server: Server, what: str, why: str) -> BackendError:
    return BackendError(
        f"the {server.role.value} vLLM server would not {what} ({why}); {HOW} — log: {server.log_path}"
    )


class Turns:
    """Who is awake. Without sleep mode every server is, and `use` does nothing."""

    def __init__(self, enabled: bool, servers: Callable[[], list[Server]]) -> None:
        self.enabled = enabled
        self._servers = servers
        self._changed: asyncio.Condition | None = None
        self._awake: Server | None = None
        self._busy = 0  # requests in flight on the awake server

    @asynccontextmanager
    async def use(self, server: Server) -> AsyncIterator[None]:
        """Hold `server` awake (and the others asleep) while the block runs."""
        if not self.enabled:
            yield
            return
        changed = self._changed = self._changed or asyncio.Condition()
        async with changed:
            while self._awake is not server and self._busy:
                await changed.wait()
            if self._awake is not server:
                await self._switch(server)
            self._busy += 1
        try:
            yield
        finally:
            async with changed:
                self._busy -= 1
                changed.notify_all()

    async def _switch(self, server: Server) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            for other in self._servers():
                if other is not server and not other.asleep:
                    await self._post(client, other, "/sleep", {"level": 1})
                    other.asleep = True
            if server.asleep:
                await self._post(client, server, "/wake_up", {})
                server.asleep = False
        self._awake = server

    async def _post(
        self, client: httpx.AsyncClient, server: Server, path: str, params: dict[str, int]
    ) -> None:
        try:
            response = await client.post(server.url + path, params=params)
        except httpx.HTTPError as exc:
            lost = BackendError(
                f"{server.role.value} server {server.url}: {path} failed ({type(exc).__name__})"
            )
            raise server.failure(lost) from None
        if response.status_code >= 400:
            raise _refused(server, path.strip("/"), f"HTTP {response.status_code}")
