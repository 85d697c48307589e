"""Turn resolved settings into a ready engine: load the backend, the models, the reward."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from rsdchat.engine import Engine, Mode
from rsdchat.plugins import load_backend
from rsdchat.protocols import Backend
from rsdchat.rewards import make_reward
from rsdchat.settings import Settings
from rsdchat.types import Role


@dataclass
class Runtime:
    """An engine and the backend that owns its models; close it when done."""

    settings: Settings
    engine: Engine
    backend: Backend

    async def aclose(self) -> None:
        await self.backend.aclose()

    def describe(self) -> dict[str, str]:
        """Who does what, for headers and --json `settings`."""
        engine = self.engine
        described = {"mode": engine.policy.mode.value, "backend": self.settings.backend}
        if engine.draft is not None:
            described["draft"] = engine.draft.info.name
        if engine.target is not None:
            described["target"] = engine.target.info.name
        if engine.reward is not None and engine.policy.mode is Mode.RSD:
            described["reward"] = engine.reward.name
            described["weighting"] = engine.policy.weighting.describe()
        return described


async def open_runtime(settings: Settings) -> Runtime:
    """Load what the chosen mode needs (target-only loads no draft and no reward, …).

    Models load from disk in a worker thread, so a UI stays responsive meanwhile.
    """
    backend = load_backend(settings.backend, settings)
    try:
        engine = await asyncio.to_thread(_engine, settings, backend)
    except BaseException:
        await backend.aclose()
        raise
    return Runtime(settings, engine, backend)


def _engine(settings: Settings, backend: Backend) -> Engine:
    mode = settings.mode
    draft = backend.generator(Role.DRAFT, settings.draft) if mode is not Mode.TARGET_ONLY else None
    target = backend.generator(Role.TARGET, settings.target) if mode is not Mode.DRAFT_ONLY else None
    reward = make_reward(settings.reward, draft=draft, target=target) if mode is Mode.RSD else None
    policy = settings.policy(reward.default_delta if reward is not None else 0.0)
    return Engine(draft=draft, target=target, reward=reward, policy=policy)
