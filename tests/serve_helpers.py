"""What the `rsdchat serve` tests share: a free port, the app served in-process on loopback
(`serving`), a real `rsdchat serve` subprocess (`RealServer`), and readers for SSE streams
and Prometheus text (`events`, `parse_metrics`).

Waiting is always polling a condition with a deadline that only guards against a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from chat_helpers import wait_until

from rsdchat.runtime import Runtime
from rsdchat.serve.answering import Limits, Server
from rsdchat.serve.app import make_app
from rsdchat.testing import free_port

USER = [{"role": "user", "content": "What is 12 times 7?"}]
CHAT = "/v1/chat/completions"


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "the condition") -> None:
    """Poll `condition` until it holds; the deadline only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# -- what comes back -----------------------------------------------------------------------


def events(lines: Iterable[str]) -> list[Any]:
    """The data of each SSE event: parsed JSON, or the string "[DONE]"."""
    found: list[Any] = []
    for line in lines:
        if line.startswith("data:"):
            data = line.removeprefix("data:").strip()
            found.append(data if data == "[DONE]" else json.loads(data))
    return found


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """An OpenAI-shaped error body with `status`; its `error` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    return error


NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
SAMPLE = re.compile(rf"^({NAME}(?:\{{{LABEL}(?:,{LABEL})*\}})?) (\S+)$")
COMMENT = re.compile(rf"^# (?:HELP {NAME} .+|TYPE {NAME} (?:counter|gauge|histogram|summary|untyped))$")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text (version 0.0.4) as {'name{labels}': value}; every line must be well formed."""
    samples: dict[str, float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("#"):
            assert COMMENT.match(line), f"not a Prometheus comment: {line!r}"
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        key, value = match.groups()
        assert key not in samples, f"sample {key} twice"
        samples[key] = float(value)  # also "+Inf", "NaN"
    return samples


def metric(samples: dict[str, float], key: str) -> float:
    return samples.get(key, 0.0)


# -- the app in this process -----------------------------------------------------------------


class _Web(uvicorn.Server):
    """uvicorn that leaves the test process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class Live:
    """An app being served on loopback: its `Server` and its base URL."""

    server: Server
    url: str

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, **kwargs)


@contextlib.asynccontextmanager
async def serving(runtime: Runtime, limits: Limits | None = None) -> AsyncIterator[Live]:
    """`make_app` over `runtime`, served by uvicorn on a free loopback port in this event loop."""
    server = Server(runtime, limits or Limits())
    port = free_port()
    config = uvicorn.Config(
        make_app(server),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    web = _Web(config)
    task = asyncio.ensure_future(web.serve())
    await wait_until(lambda: web.started or task.done(), timeout=30)
    assert web.started, "uvicorn did not start"
    try:
        yield Live(server, f"http://127.0.0.1:{port}")
    finally:
        web.should_exit = True
        await asyncio.wait_for(task, timeout=30)


# -- a real `rsdchat serve` ------------------------------------------------------------------

SMOLLM = ("--draft", "smollm2-135m", "--target", "smollm2-135m", "--reward", "draft-confidence")


class RealServer:
    """`rsdchat serve` in a subprocess on a free port; its stdout and stderr go to files."""

    def __init__(self, home: Path, *flags: str, env: dict[str, str] | None = None, host: str = "127.0.0.1"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("RSDCHAT_")}
        environment |= {
            "XDG_CONFIG_HOME": str(home / "config"),  # no user config file
            "RSDCHAT_DATA_DIR": str(home / "data"),
            "COLUMNS": "250",  # messages on one line
            "PYTHONUNBUFFERED": "1",
        }
        environment |= env or {}
        command = [str(Path(sys.executable).with_name("rsdchat")), "serve", "--host", host]
        command += ["--port", str(self.port), *flags]
        self._out = (home / "stdout.txt").open("wb")
        self._err = (home / "stderr.txt").open("wb")
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err, env=environment
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        """Its stdout and stderr so far."""
        return (self.home / "stdout.txt").read_text() + (self.home / "stderr.txt").read_text()

    def wait_ready(self, timeout: float = 180.0) -> None:
        def ready() -> bool:
            assert self.process.poll() is None, f"rsdchat serve exited:\n{self.output()}"
            try:
                return httpx.get(f"{self.url}/health", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout, "rsdchat serve to load its models")

    def metrics(self, **headers: str) -> dict[str, float]:
        response = httpx.get(f"{self.url}/metrics", headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        return parse_metrics(response.text)

    def cpu_seconds(self) -> float:
        """CPU time the process has used (user and system, all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send `sig` (once) and wait for the process to end; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(30)
            self._out.close()
            self._err.close()
