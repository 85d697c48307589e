"""Reward models on a vLLM server rsdchat starts: `vllm-qwen-prm`, `vllm-skywork-prm`, `vllm-orm`.

Each is the openai plugin's reward source (`rsdchat_openai.rewards`: the same requests,
the same parsing) pointed at a reward server launched with `--runner pooling`. The
server belongs to the vllm backend's launcher when the draft or the target runs on
it (one set of servers, one GPU budget, one shutdown); otherwise the reward source
starts its own and stops it when it is closed. Either way it is stopped with rsdchat.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

from rsdchat.plugin_api import (
    BackendError,
    Context,
    Generation,
    RewardContext,
    RewardPlugin,
    RewardSource,
    Role,
    RoleCheck,
    Score,
)
from rsdchat_openai.rewards import HttpReward, OutcomeRM, QwenPRM, SkyworkPRM
from rsdchat_vllm.backend import VllmGenerator, client_config
from rsdchat_vllm.config import VllmConfig
from rsdchat_vllm.launcher import Launcher
from rsdchat_vllm.process import Server

# The model each reward serves when `reward_model` is not set.
MODELS = {
    "vllm-qwen-prm": "Qwen/Qwen2.5-Math-PRM-7B",
    "vllm-skywork-prm": "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B",
    "vllm-orm": "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2",
}


class LaunchedReward:
    """An HTTP reward source on a launched server: failures name the role and the server's log."""

    def __init__(
        self, name: str, inner: HttpReward, server: Server, launcher: Launcher, *, owned: bool
    ) -> None:
        self.name = name
        self.inner, self.server, self.launcher, self._owned = inner, server, launcher, owned
        self.kind: Literal["process", "outcome"] = inner.kind
        self.default_delta = inner.default_delta
        self.bounds = inner.bounds
        self.n_params = inner.n_params

    async def score(self, context: Context, step: Generation) -> Score:
        async with self.launcher.turns.use(self.server):
            try:
                return await self.inner.score(context, step)
            except BackendError as exc:
                raise self.server.failure(exc) from None

    async def diagnose(self) -> RoleCheck:
        async with self.launcher.turns.use(self.server):
            check = await self.inner.diagnose()
        notes = (*check.notes, f"pid {self.server.pid} · log {self.server.log_path}")
        return check.replace(backend="vllm", model=f"{self.name}: {self.server.model}", notes=notes)

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            if self._owned:
                self.launcher.close()


def shared_launcher(context: RewardContext) -> Launcher | None:
    """The vllm backend's launcher, when the draft or the target came from it."""
    for model in (context.draft, context.target):
        if isinstance(model, VllmGenerator):
            return model.backend.launcher
    return None


def launched(name: str, kind: type[HttpReward]) -> Callable[[RewardContext], RewardSource]:
    def create(context: RewardContext) -> RewardSource:
        config = context.config("vllm", VllmConfig)
        model = config.reward_model or MODELS[name]
        launcher = shared_launcher(context)
        owned = launcher is None
        launcher = launcher or Launcher(config)
        try:
            server = launcher.start(Role.REWARD, model)
            client = client_config(config, Role.REWARD, server, reward_model=model)
            inner = kind(dataclasses.replace(context, configs={"openai": client}))
        except BaseException:
            if owned:
                launcher.close()
            raise
        return LaunchedReward(name, inner, server, launcher, owned=owned)

    return create


QWEN_PRM = RewardPlugin(
    "vllm-qwen-prm",
    "qwen-prm on a vLLM server rsdchat starts here (reward_model, default Qwen2.5-Math-PRM-7B)",
    launched("vllm-qwen-prm", QwenPRM),
    cost="reward model",
)
SKYWORK_PRM = RewardPlugin(
    "vllm-skywork-prm",
    "skywork-prm on a vLLM server rsdchat starts here (needs vLLM 0.6.4.post1 with Skywork's plugin)",
    launched("vllm-skywork-prm", SkyworkPRM),
    cost="reward model",
)
ORM = RewardPlugin(
    "vllm-orm",
    "orm (an outcome reward model) on a vLLM server rsdchat starts here (reward_model)",
    launched("vllm-orm", OutcomeRM),
    cost="reward model",
)
