"""Reward sources by name: `make_reward("arithmetic*draft-confidence", ctx)` multiplies sources.

Every source, built in or from a plugin, is a `RewardPlugin` in the entry-point group
`rsdchat.rewards` (rsdchat's own are declared in its pyproject.toml).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from rsdchat.core.errors import ConfigError
from rsdchat.core.protocols import RewardSource, Score
from rsdchat.core.types import Context, Generation, Usage
from rsdchat.plugins import RewardContext, reward_plugin, reward_plugins


def split_spec(spec: str) -> list[str]:
    """'arithmetic * draft-confidence' -> ['arithmetic', 'draft-confidence']."""
    return [part.strip() for part in spec.split("*")]


def check_reward_spec(spec: str) -> str:
    """The spec, tidied, if every name in it is a known reward source; else a ValueError."""
    names = split_spec(spec)
    known = reward_plugins()
    for name in names:
        if name not in known:
            choices = ", ".join(known) or "none installed"
            raise ValueError(f"unknown reward {name!r}; choose one of: {choices} (or several joined by '*')")
    return "*".join(names)


def make_reward(spec: str, context: RewardContext) -> RewardSource:
    """Build the reward source named `spec` (names joined by `*` are multiplied)."""
    parts = tuple(reward_plugin(name).create(context) for name in split_spec(spec) if name)
    if not parts:
        raise ConfigError(f"no reward source named in {spec!r}")
    return parts[0] if len(parts) == 1 else Product(parts)


def _product_bounds(parts: tuple[RewardSource, ...]) -> tuple[float, float] | None:
    bounds = [part.bounds for part in parts]
    if any(b is None or b[0] < 0 for b in bounds):
        return None
    return math.prod(b[0] for b in bounds if b), math.prod(b[1] for b in bounds if b)


@dataclass
class Product:
    """r = r_1 · r_2 · …: e.g. arithmetic*draft-confidence vetoes a confident step with wrong sums."""

    parts: tuple[RewardSource, ...]
    kind: Literal["process", "outcome"] = "process"
    name: str = field(init=False)
    default_delta: float = field(init=False)
    bounds: tuple[float, float] | None = field(init=False)
    n_params: int = field(init=False)

    def __post_init__(self) -> None:
        self.name = "*".join(part.name for part in self.parts)
        self.default_delta = math.prod(part.default_delta for part in self.parts)
        self.bounds = _product_bounds(self.parts)
        self.n_params = max(part.n_params for part in self.parts)

    async def score(self, context: Context, step: Generation) -> Score:
        reward, usage, target_logprob, details = 1.0, Usage(), None, []
        for part in self.parts:
            score = await part.score(context, step)
            reward *= score.reward
            usage += score.usage
            target_logprob = score.target_logprob if score.target_logprob is not None else target_logprob
            details += [score.detail] if score.detail else []
        return Score(reward, usage, target_logprob, "; ".join(details))

    async def aclose(self) -> None:
        for part in self.parts:
            await part.aclose()


__all__ = ["Product", "RewardContext", "check_reward_spec", "make_reward", "split_spec"]
