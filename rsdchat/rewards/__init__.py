"""Reward sources by name. `make_reward("arithmetic*draft-confidence", ...)` multiplies sources."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType
from typing import TYPE_CHECKING

from rsdchat.errors import ConfigError
from rsdchat.protocols import RewardSource, StepGenerator

if TYPE_CHECKING:
    from rsdchat.settings import Settings

from rsdchat.rewards.sources import Arithmetic, DraftConfidence, Judge, Product, TargetLogprob

RewardFactory = Callable[[StepGenerator | None, StepGenerator | None], RewardSource]


def _need(model: StepGenerator | None, who: str, name: str) -> StepGenerator:
    if model is None:
        raise ConfigError(f"reward {name} needs a {who} model")
    return model


_FACTORIES: dict[str, tuple[str, RewardFactory]] = {
    "target-logprob": (
        "the target's per-token probability of the draft step (reads the step, writes nothing)",
        lambda draft, target: TargetLogprob(_need(target, "target", "target-logprob")),
    ),
    "draft-confidence": (
        "the draft's own per-token probability of its step (free)",
        lambda draft, target: DraftConfidence(),
    ),
    "judge": (
        "the target asked 'is this step correct?', P(Yes)",
        lambda draft, target: Judge(_need(target, "target", "judge")),
    ),
    "arithmetic": (
        "share of the equations in the step that check out (free, deterministic)",
        lambda draft, target: Arithmetic(),
    ),
}

REWARDS = MappingProxyType({name: description for name, (description, _) in _FACTORIES.items()})


PLUGIN_GROUP = "rsdchat.rewards"  # entry points: name -> factory (settings, draft, target) -> RewardSource


def plugin_rewards() -> dict[str, EntryPoint]:
    """Reward sources provided by installed plugins (e.g. rsdchat-openai's qwen-prm, orm)."""
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP) if ep.name not in _FACTORIES}


def make_reward(
    spec: str, *, draft: StepGenerator | None, target: StepGenerator | None, settings: Settings | None = None
) -> RewardSource:
    """Build the reward source named `spec` (names joined by `*` are multiplied).

    Plugin sources get `settings` (where their server is); it may be omitted for built-ins.
    """
    names = [part.strip() for part in spec.split("*")]
    plugins = plugin_rewards()
    unknown = [name for name in names if name not in _FACTORIES and name not in plugins]
    if unknown or not spec.strip():
        known = ", ".join([*REWARDS, *sorted(plugins)])
        raise ConfigError(
            f"unknown reward {unknown[0] if unknown else spec!r}; choose one of: {known}"
            " (or several joined by '*')"
        )
    parts = tuple(
        _FACTORIES[name][1](draft, target)
        if name in _FACTORIES
        else _plugin(plugins[name], settings, draft, target)
        for name in names
    )
    return parts[0] if len(parts) == 1 else Product(parts)


def _plugin(
    ep: EntryPoint, settings: Settings | None, draft: StepGenerator | None, target: StepGenerator | None
) -> RewardSource:
    if settings is None:
        raise ConfigError(f"reward {ep.name} needs the settings (its server's address)")
    try:
        factory = ep.load()
    except ImportError as exc:
        raise ConfigError(f"reward {ep.name!r} is installed but cannot be imported: {exc}") from None
    source: RewardSource = factory(settings, draft, target)
    return source
