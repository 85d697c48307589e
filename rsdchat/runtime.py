"""Turn resolved settings into ready models: the backends, the engine, the reward source."""

from __future__ import annotations

from dataclasses import dataclass, field

from rsdchat.core.engine import Engine
from rsdchat.core.errors import ConfigError
from rsdchat.core.policy import Mode, Policy
from rsdchat.core.protocols import Backend, Releases, RewardSource, StepGenerator
from rsdchat.core.types import Role
from rsdchat.in_force import in_force
from rsdchat.plugins import RewardContext, load_backend
from rsdchat.rewards import make_reward
from rsdchat.settings import Settings
from rsdchat.threads import in_thread


@dataclass
class Swap:
    """A model `Runtime.swap` put in place of another, until the swap is kept (`keep`) or undone (`undo`)."""

    role: Role
    name: str  # as given: a name the backend knows, or a path
    model: StepGenerator
    old_name: str
    old: StepGenerator | None  # None: the role had no model loaded yet


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

    def _load(self, role: Role, name: str | None = None) -> StepGenerator:
        """The `role` model: `name`, else the one the settings name (blocking: run it in a thread)."""
        plugin = self.settings.backend_for(role)
        if plugin not in self.backends:
            self.backends[plugin] = load_backend(plugin, self.settings.backends)
        return self.backends[plugin].generator(role, name or getattr(self.settings, role.value))

    async def swap(self, role: Role, name: str) -> Swap:
        """Load `name` for `role` (off the event loop) and put it in the engine and the settings.

        ConfigError (one line; nothing changed) if it cannot be loaded. The old model stays
        loaded until the swap is kept (`keep` lets it go) or undone (`undo` puts it back).
        Reward sources built on the old model are the caller's to build again.
        """
        settings = self.settings.replace(**{role.value: name})
        try:
            model = await in_thread(self._load, role, name)
        except ConfigError:
            raise
        except Exception as exc:  # llama.cpp's ValueError, a server that does not answer, …
            said = str(exc) or type(exc).__name__
            raise ConfigError(f"{role.value} {name} could not be loaded: {said}") from None
        swap = Swap(role, name, model, getattr(self.settings, role.value), getattr(self.engine, role.value))
        setattr(self.engine, role.value, model)
        self.settings = settings
        return swap

    async def keep(self, swap: Swap) -> None:
        """The swap holds: the old model is released, if its backend can and nothing else uses it."""
        await self._release(swap.role, swap.old)

    async def undo(self, swap: Swap) -> None:
        """Put the old model back, and release the new one (if its backend can and nothing else uses it)."""
        setattr(self.engine, swap.role.value, swap.old)
        self.settings = self.settings.replace(**{swap.role.value: swap.old_name})
        await self._release(swap.role, swap.model)

    async def _release(self, role: Role, model: StepGenerator | None) -> None:
        if model is None or model is self.engine.draft or model is self.engine.target:
            return  # none, or still in use (draft and target may share one model)
        backend = self.backends.get(self.settings.backend_for(role))
        if isinstance(backend, Releases):  # else it stays loaded until `aclose`
            await backend.release_model(model)

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
