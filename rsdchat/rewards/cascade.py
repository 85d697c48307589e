"""A cascade with two thresholds: the free score decides the clear cases, the target the rest.

    free score s = draft-scorer(step)                  (costs nothing)
    s ≥ high       → keep the step                     (the target never sees it)
    s < low        → reject it                         (the target rewrites it, as always)
    low ≤ s < high → ask the target: keep the step if its least likely token, read by the
                     target, has probability ≥ check   (one read of the step by the target)

The cascade decides each step itself and says so in its reward, which is exactly one of
s (outside the grey zone), high (the target passed the step) or low (it did not): a kept
step's reward is ≥ high and a rejected one's ≤ low. Only the binary ω with δ in (low, high]
(the default is the middle) keeps exactly the steps the cascade keeps, so the cascade
declares that band (`Decides`) and `Engine.check` refuses any other ω or δ rather than let
them read its rewards as graded scores. Each step says which stage decided it
(`Score.decided_by`), so `rsdchat eval` counts how often the grey zone was hit. Inside a
product (`cascade*arithmetic`) it is only a reward with those values, and decides nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from rsdchat.core.errors import ConfigError
from rsdchat.core.protocols import RewardSource, Score
from rsdchat.core.types import Context, Generation, Usage
from rsdchat.plugins import RewardContext, RewardPlugin
from rsdchat.rewards.learned import LearnedScorer, load_scorer
from rsdchat.rewards.sources import ReadsWithTarget, target_reward


def least_likely(token_logprobs: tuple[float, ...]) -> float:
    """The probability of the step's least likely token (NaN for values that are no log-probs)."""
    if not token_logprobs:
        return 1.0
    low = min(token_logprobs)
    if not all(math.isfinite(v) and v <= 1e-6 for v in token_logprobs):
        return math.nan
    return math.exp(low)


@dataclass
class TargetMinProb(ReadsWithTarget):
    """r = the target's probability of the step's least likely token: one wrong number shows,
    where a mean over ~50 easy tokens would hide it. Reads the step, writes nothing."""

    name: str = "target-min-prob"
    kind: Literal["process", "outcome"] = "process"
    default_delta: float = 0.1
    bounds: tuple[float, float] | None = (0.0, 1.0)

    async def score(self, context: Context, step: Generation) -> Score:
        scored = await self._model.logprobs(context, step.text)
        return Score(least_likely(scored.token_logprobs), scored.usage, target_logprob=scored.mean)


@dataclass
class Cascade:
    """Free score first; in the grey zone [low, high) the target's check decides."""

    free: RewardSource
    check: RewardSource
    low: float
    high: float
    passing: float  # the check's threshold
    name: str = "cascade"
    kind: Literal["process", "outcome"] = "process"
    bounds: tuple[float, float] | None = (0.0, 1.0)
    default_delta: float = field(init=False)
    n_params: int = field(init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high <= 1:
            band = f"got {self.low}, {self.high}"
            raise ConfigError(f"cascade: need 0 ≤ cascade_low ≤ cascade_high ≤ 1 ({band})")
        self.default_delta = (self.low + self.high) / 2
        self.n_params = self.check.n_params

    @property
    def decision_band(self) -> tuple[float, float]:
        """(low, high]: the δ with which the binary ω keeps exactly the steps the cascade keeps."""
        return self.low, self.high

    async def score(self, context: Context, step: Generation) -> Score:
        free = await self.free.score(context, step)
        if not math.isfinite(free.reward) or not self.low <= free.reward < self.high:
            return Score(free.reward, free.usage, detail=free.detail, decided_by=self.free.name)
        asked = await self.check.score(context, step)
        passed = asked.reward >= self.passing  # NaN (a faulty server) fails
        verdict = "≥" if passed else "<"
        detail = f"grey zone ({self.free.name} {free.reward:.2f}): {self.check.name} {asked.reward:.3g} "
        detail += f"{verdict} {self.passing:g}"
        usage = Usage()
        usage += free.usage
        usage += asked.usage
        return Score(
            self.high if passed else self.low,
            usage,
            asked.target_logprob,
            detail,
            decided_by=self.check.name,
        )

    async def aclose(self) -> None:
        await self.free.aclose()
        await self.check.aclose()


LOW, HIGH = 0.4, 0.6
"""The default grey zone [low, high) of the free score (the settings cascade_low, cascade_high)."""


def _cascade(ctx: RewardContext) -> Cascade:
    target = TargetMinProb(ctx.need("target", "cascade"))
    options = ctx.options
    return Cascade(
        LearnedScorer(load_scorer()),
        target,
        low=float(options.get("cascade_low", LOW)),
        high=float(options.get("cascade_high", HIGH)),
        passing=float(options.get("cascade_check", target.default_delta)),
    )


TARGET_MIN_PROB = target_reward(
    "target-min-prob",
    "the target's probability of the step's least likely token (reads the step, writes nothing)",
    TargetMinProb,
)
CASCADE = RewardPlugin(
    "cascade",
    "draft-scorer decides clear steps; in its grey zone (cascade_low…cascade_high) target-min-prob does",
    _cascade,
    cost="target, grey zone only",
)
