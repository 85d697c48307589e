"""Reward sources by name. `make_reward("arithmetic*draft-confidence", ...)` multiplies sources."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

from rsdchat.errors import ConfigError
from rsdchat.protocols import RewardSource, StepGenerator
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


def make_reward(spec: str, *, draft: StepGenerator | None, target: StepGenerator | None) -> RewardSource:
    """Build the reward source named `spec` (names joined by `*` are multiplied)."""
    names = [part.strip() for part in spec.split("*")]
    unknown = [name for name in names if name not in _FACTORIES]
    if unknown or not spec.strip():
        raise ConfigError(
            f"unknown reward {unknown[0] if unknown else spec!r}; choose one of: {', '.join(REWARDS)}"
            " (or several joined by '*')"
        )
    parts = tuple(_FACTORIES[name][1](draft, target) for name in names)
    return parts[0] if len(parts) == 1 else Product(parts)
