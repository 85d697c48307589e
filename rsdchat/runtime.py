"""Turn resolved settings into ready models: the backends, the engine, the reward source."""

from __future__ import annotations

from dataclasses import dataclass, field

from rsdchat.core.engine import Engine
from rsdchat.core.policy import Mode, Policy
from rsdchat.core.protocols import Backend, RewardSource, StepGenerator
from rsdchat.core.types import Role
from rsdchat.in_force import in_force
from rsdchat.plugins import RewardContext, load_backend
from rsdchat.rewards import make_reward
from rsdchat.settings import Settings
from rsdchat.threads import in_thread


@dataclass
class Runtime:
    """An engine, the backends that own its models, and the reward source; close it when done."""

    settings: Settings
    engine: Engine
    backends: dict[str, Backend] = field(default_factory=dict)  # by plugin name
    reward: RewardSource | None = None  # the settings' reward source (None until a mode needs it)

    def policy(self) -> Policy:
        """The policy the settings describe, judged by this runtime's reward source."""
        return in_force(self.settings, self.reward).policy

    def reward_context(self) -> RewardContext:
        engine, settings = self.engine, self.settings
        return RewardContext(
            engine.draft, engine.target, settings.backends, settings.step_delimiter, settings.options()
        )

    async def make_reward(self, spec: str) -> RewardSource:
        """A reward source for these models (off the event loop: it may ask a server)."""
        return await in_thread(make_reward, spec, self.reward_context())

    async def load_models(self, mode: Mode) -> None:
        """Load the models `mode` needs that are not loaded yet (off the event loop)."""
        for role in (Role.DRAFT, Role.TARGET):
            if role in mode.roles and getattr(self.engine, role.value) is None:
                model = await in_thread(self._load, role)
                setattr(self.engine, role.value, model)

    def _load(self, role: Role) -> StepGenerator:
        name = self.settings.backend_for(role)
        if name not in self.backends:
            self.backends[name] = load_backend(name, self.settings.backends)
        return self.backends[name].generator(role, getattr(self.settings, role.value))

    async def aclose(self) -> None:
        if self.reward is not None:
            await self.reward.aclose()
        for backend in self.backends.values():
            await backend.aclose()

    def describe(self) -> dict[str, str]:
        """Who does what, for headers and --json `settings`."""
        engine, settings = self.engine, self.settings
        described = {"mode": settings.mode.value, "backend": settings.backend}
        if engine.draft is not None:
            described["draft"] = engine.draft.info.name
        if engine.target is not None:
            described["target"] = engine.target.info.name
        if self.reward is not None and settings.mode is Mode.RSD:
            described["reward"] = self.reward.name
            described["weighting"] = self.policy().weighting.describe()
        return described


async def open_runtime(settings: Settings, mode: Mode | None = None, *, with_reward: bool = True) -> Runtime:
    """Load what `mode` (default: the settings') needs: target-only loads no draft and no reward, ….

    `with_reward=False` leaves the reward to the caller (the chat and `eval` build their own).
    Models load in a worker thread, so a UI stays responsive. On failure, whatever was
    loaded is closed again.
    """
    mode = mode or settings.mode
    runtime = Runtime(settings, Engine(draft=None, target=None))
    try:
        await runtime.load_models(mode)
        if with_reward and mode is Mode.RSD:
            runtime.reward = await runtime.make_reward(settings.reward)
    except BaseException:
        await runtime.aclose()
        raise
    return runtime
