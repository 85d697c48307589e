"""Real `vllm serve` processes for tests and benchmarks: vLLM's CPU build in `.venv-vllm` serving
the checkpoints that `bash scripts/setup_vllm.sh --checkpoints` rebuilt from the packaged GGUF files."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx

REPO = Path(__file__).resolve().parents[3]  # a source checkout (these helpers are for its tests)
VLLM = REPO / ".venv-vllm" / "bin" / "vllm"
VENV_PYTHON = VLLM.with_name("python")
SETUP = "bash scripts/setup_vllm.sh --checkpoints"
STAMP = "rsdchat-checkpoint.json"  # written last by scripts/vllm_checkpoints.py
ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
SERVE = ("--dtype", "bfloat16", "--enforce-eager", "--max-model-len", "2048")


def checkpoints_dir() -> Path:
    """Where the setup step builds the checkpoints (beside the embedded models' cache)."""
    from rsdchat_llamacpp.embedded import default_cache_dir

    return default_cache_dir() / "vllm-checkpoints"


def built_checkpoint(name: str) -> Path | None:
    """The checkpoint `name` (smollm2, qwen, qwen-prm, smollm2-orm) if it is built whole, else None."""
    folder = checkpoints_dir() / name
    return folder if VLLM.is_file() and (folder / STAMP).is_file() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class VllmServer:
    """One `vllm serve` process (its own process group) on a loopback port, logging to `log`."""

    def __init__(
        self,
        model: Path,
        name: str,
        log: Path,
        *args: str,
        start_timeout: float = 300.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name, self.port, self.log = name, free_port(), log
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [str(VLLM), "serve", str(model), "--served-model-name", name, "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), *SERVE, *args]
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **ENV, **(env or {})},
                start_new_session=True,
            )
        try:
            self._wait(start_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"vllm serve {self.name} exited ({self.process.returncode}):\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(1)
        raise RuntimeError(f"vllm serve {self.name} did not answer /health in {timeout:.0f} s")

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL to what is left: no process outlives it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # the engine core, if it lingers
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)

    def __enter__(self) -> VllmServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
