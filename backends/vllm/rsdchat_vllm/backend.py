"""The vllm backend: starts a role's server on first use, then talks to it as the openai backend does.

Each role's generator is the openai backend's (`rsdchat_openai`, pointed at the launched
server) inside a thin wrapper that turns a failed request into one line naming the role
and its log, says whether the server died, and (with sleep mode) wakes the server first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import threading

from rsdchat.plugin_api import (
    PROGRESS,
    BackendError,
    Context,
    Feature,
    Generation,
    Logprobs,
    ModelInfo,
    Role,
    RoleCheck,
    RsdchatError,
    StepRequest,
    TokenSink,
    in_thread,
    si,
)
from rsdchat_openai import OpenAIBackend, OpenAIConfig
from rsdchat_openai.generator import ContextFull, HttpGenerator, HttpLogprobGenerator
from rsdchat_openai.wire import guess_params
from rsdchat_vllm.config import VllmConfig
from rsdchat_vllm.launcher import Launcher, Say, checkpoint_params
from rsdchat_vllm.process import Server

CONTEXT_HINT = "raise max_model_len"


def client_config(config: VllmConfig, role: Role, server: Server, **more: object) -> OpenAIConfig:
    """The openai backend's settings for one launched server (and nothing from the environment)."""
    return OpenAIConfig.model_validate(
        {
            "base_url": None,
            "http_read_timeout": config.http_read_timeout,
            "draft_logprobs": config.draft_logprobs,
            f"{role.value}_url": server.url,
            f"{role.value}_params": model_params(config, role, server.model) or None,
            **more,
        }
    )


def model_params(config: VllmConfig, role: Role, model: str) -> int:
    """Parameters of a role's launched model: its `<role>_params` setting, else counted from the
    checkpoint vLLM loads (0: unknown; the caller may still read a size from the model's name)."""
    return config.params(role) or checkpoint_params(model)


class VllmGenerator:
    """A launched server's generator: the openai one, with failures that name the role and the log.

    A request that finds its server stopped (it crashed under an earlier one) starts it again
    first, up to the `restarts` setting; the request it crashed under has failed already.
    """

    def __init__(
        self, backend: VllmBackend, role: Role, model: str, server: Server, inner: HttpGenerator
    ) -> None:
        self.backend, self.role, self.model, self.server, self.inner = backend, role, model, server, inner
        n_params = model_params(backend.config, role, model) or inner.info.n_params  # 0: unknown
        self.info: ModelInfo = dataclasses.replace(self.inner.info, backend="vllm", n_params=n_params)
        self._restarting = asyncio.Lock()

    @property
    def features(self) -> frozenset[Feature]:
        """The openai client's: what its requests can ask of the server."""
        return self.inner.features

    async def _up(self) -> None:
        if self.server.exited() is None:
            return
        async with self._restarting:  # requests in flight together restart it once
            if self.server.exited() is not None:
                self.server = await self.backend.restart(self.role, self.model, self.server)
                self.inner = self.backend.client(self.role, self.server).generator(self.role, self.model)

    async def generate(
        self, context: Context, request: StepRequest, on_token: TokenSink | None = None
    ) -> Generation:
        await self._up()
        async with self.backend.launcher.turns.use(self.server):
            try:
                return await self.inner.generate(context, request, on_token)
            except ContextFull as exc:  # the server is fine: the conversation is too long for it
                raise ContextFull(exc.role, exc.size, CONTEXT_HINT) from None
            except BackendError as exc:
                raise self.server.failure(exc) from None


class VllmLogprobGenerator(VllmGenerator):
    """The same, for a server that also scores given text (vLLM's prompt_logprobs)."""

    inner: HttpLogprobGenerator

    async def logprobs(self, context: Context, continuation: str) -> Logprobs:
        await self._up()
        async with self.backend.launcher.turns.use(self.server):
            try:
                return await self.inner.logprobs(context, continuation)
            except ContextFull as exc:
                raise ContextFull(exc.role, exc.size, CONTEXT_HINT) from None
            except BackendError as exc:
                raise self.server.failure(exc) from None


class VllmBackend:
    """One server per role, started on first use, all stopped by `aclose`."""

    def __init__(self, config: VllmConfig, *, say: Say = PROGRESS.info) -> None:
        self.config = config
        self.launcher = Launcher(config, say=say)  # finds vLLM now: a missing one is a ConfigError
        self.say = say
        self._restarts: dict[Role, int] = {}  # servers started again, per role
        self._clients: dict[Role, tuple[Server, OpenAIBackend]] = {}
        self._lock = threading.Lock()
        self._facts_lock = threading.Lock()
        self._facts: tuple[str, ...] | None = None

    def generator(self, role: Role, model: str) -> VllmGenerator:
        """Blocking: starts the role's server if it is not up (minutes for a large model)."""
        server = self.launcher.start(role, model)
        inner = self.client(role, server).generator(role, model)
        kind = VllmLogprobGenerator if isinstance(inner, HttpLogprobGenerator) else VllmGenerator
        return kind(self, role, model, server, inner)

    async def restart(self, role: Role, model: str, stopped: Server) -> Server:
        """The role's server again after `stopped` exited; its death as the error once restarts are spent."""
        with self._lock:
            done = self._restarts.get(role, 0)
            if done >= self.config.restarts:
                raise stopped.died()
            self._restarts[role] = done + 1
        self.say(f"vllm: {stopped.died()}; starting it again ({done + 1} of {self.config.restarts} restarts)")
        server = await in_thread(self.launcher.start, role, model)
        old = self._clients.pop(role, None)
        if old is not None:
            await old[1].aclose()  # the client of the server that stopped
        return server

    def client(self, role: Role, server: Server) -> OpenAIBackend:
        with self._lock:
            known = self._clients.get(role)
            if known is None or known[0] is not server:
                self._clients[role] = (server, OpenAIBackend(client_config(self.config, role, server)))
            return self._clients[role][1]

    async def aclose(self) -> None:
        try:
            for _, client in list(self._clients.values()):
                await client.aclose()
        finally:
            self._clients.clear()
            self.launcher.close()  # blocks up to stop_timeout: nothing may outlive us

    async def diagnose(self, role: Role, model: str) -> RoleCheck:
        """vLLM's version and the GPUs seen, then the server started and checked like any openai one."""
        facts = await in_thread(self.facts)
        check = RoleCheck(role.value, "vllm", model, notes=facts)
        try:
            server = await in_thread(self.launcher.start, role, model)
        except RsdchatError as exc:
            return check.replace(error=str(exc))
        found = await self.client(role, server).diagnose(role, model)
        where = f"pid {server.pid} · log {server.log_path}"
        n_params = await in_thread(model_params, self.config, role, model) or guess_params(model)
        unknown = f"parameters unknown (for FLOPs set {role.value}_params)"
        size = f"{si(n_params)} parameters" if n_params else unknown
        return found.replace(backend="vllm", notes=(*facts, *found.notes, size, where))

    def facts(self) -> tuple[str, ...]:
        """'vllm 0.x found', where the servers run, and the GPUs nvidia-smi lists (information only)."""
        with self._facts_lock:
            if self._facts is None:
                self._facts = (_version(self.launcher.command), self._device(), _gpus())
            return self._facts

    def _device(self) -> str:
        device, config = self.launcher.device, self.config
        how = (
            "device setting"
            if config.device != "auto"
            else "device auto: " + ("a GPU device found" if device == "gpu" else "no GPU device found")
        )
        if device == "gpu":
            return f"servers on the GPU ({how})"
        kv = config.kv_cache_gib or os.environ.get("VLLM_CPU_KVCACHE_SPACE", "").strip() or 1
        return f"servers on the CPU ({how}; KV cache {kv} GiB each, kv_cache_gib)"


def _version(command: list[str]) -> str:
    try:
        done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{command[0]} found; `--version` failed ({type(exc).__name__})"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return f"vllm {lines[-1].strip()} found" if done.returncode == 0 and lines else f"{command[0]} found"


def _gpus() -> str:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "GPUs: not listed (no nvidia-smi on PATH)"
    query = [smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"GPUs: nvidia-smi failed ({type(exc).__name__})"
    rows = [" ".join(row.split()) for row in done.stdout.strip().splitlines() if row.strip()]
    return f"GPUs: {'; '.join(rows)}" if done.returncode == 0 and rows else "GPUs: none listed by nvidia-smi"
