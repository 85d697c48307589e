"""Turn resolved settings into a ready engine: load the backend, the models, the reward."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from rsdchat.engine import Engine, Mode
from rsdchat.plugins import load_backend
from rsdchat.protocols import Backend, StepGenerator
from rsdchat.rewards import make_reward
from rsdchat.settings import Settings
from rsdchat.types import Role


@dataclass
class Runtime:
    """An engine and the backend(s) that own its models; close it when done."""

    settings: Settings
    engine: Engine
    backend: Backend  # the one named by `backend`
    others: dict[str, Backend] = field(default_factory=dict)  # named by draft_backend / target_backend

    def backend_for(self, role: Role) -> Backend:
        name = backend_name(self.settings, role)
        return self.others.get(name, self.backend)

    async def aclose(self) -> None:
        close = getattr(self.engine.reward, "aclose", None)
        if close is not None:
            await close()
        for backend in (self.backend, *self.others.values()):
            await backend.aclose()

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


def backend_name(settings: Settings, role: Role) -> str:
    """The backend plugin of `role`: its own setting, else `backend`."""
    own = settings.draft_backend if role is Role.DRAFT else settings.target_backend
    return own or settings.backend


def _roles(mode: Mode) -> tuple[Role, ...]:
    return {Mode.TARGET_ONLY: (Role.TARGET,), Mode.DRAFT_ONLY: (Role.DRAFT,)}.get(
        mode, (Role.DRAFT, Role.TARGET)
    )


async def open_runtime(settings: Settings) -> Runtime:
    """Load what the chosen mode needs (target-only loads no draft and no reward, …).

    Models load from disk (or servers are checked) in a worker thread, so a UI stays responsive.
    """
    backend = load_backend(settings.backend, settings)
    others: dict[str, Backend] = {}
    try:
        for role in (Role.DRAFT, Role.TARGET):  # all of them, so a UI can switch modes later
            name = backend_name(settings, role)
            if name != settings.backend and name not in others:
                others[name] = load_backend(name, settings)
        backends = {settings.backend: backend, **others}
        engine = await asyncio.to_thread(_engine, settings, backends)
    except BaseException:
        for loaded in (backend, *others.values()):
            await loaded.aclose()
        raise
    return Runtime(settings, engine, backend, others)


def _engine(settings: Settings, backends: dict[str, Backend]) -> Engine:
    roles = _roles(settings.mode)

    def load(role: Role, model: str) -> StepGenerator | None:
        return backends[backend_name(settings, role)].generator(role, model) if role in roles else None

    draft, target = load(Role.DRAFT, settings.draft), load(Role.TARGET, settings.target)
    reward = None
    if settings.mode is Mode.RSD:
        reward = make_reward(settings.reward, draft=draft, target=target, settings=settings)
    policy = settings.policy(reward.default_delta if reward is not None else 0.0)
    return Engine(draft=draft, target=target, reward=reward, policy=policy)
