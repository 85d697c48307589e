"""Weighting functions ω(r) ∈ [0, 1] (paper Table 1 and §2.4).

ω says how much the draft's step is trusted. Reward-based variants read only the
reward; the likelihood-ratio and hybrid variants also read the step's log-probability
under the draft (P_m) and the target (P_M). Step probabilities are taken per token
(geometric mean), so a long step is not rejected merely for being long.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Protocol

from rsdchat.errors import ConfigError


@dataclass(frozen=True)
class Signals:
    """What a weighting function may look at for one draft step."""

    reward: float
    draft_logprob: float | None = None  # mean log P_m(token) over the step
    target_logprob: float | None = None  # mean log P_M(token) over the step


class Weighting(Protocol):
    """ω: signals → [0, 1]. Non-decreasing in the reward (Prop. 2.2)."""

    name: ClassVar[str]
    needs_logprobs: ClassVar[bool]

    def __call__(self, signals: Signals) -> float: ...

    def describe(self) -> str: ...


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


@dataclass(frozen=True)
class Constant:
    """ω(r) = p: accept a fixed share of drafts whatever their reward."""

    p: float
    name: ClassVar[str] = "constant"
    needs_logprobs: ClassVar[bool] = False

    def __call__(self, signals: Signals) -> float:
        return _clip(self.p)

    def describe(self) -> str:
        return f"constant p={self.p:g}"


@dataclass(frozen=True)
class BinaryStep:
    """ω(r) = 1(r ≥ δ): the default, optimal under a budget (Prop. 2.3)."""

    delta: float
    name: ClassVar[str] = "binary"
    needs_logprobs: ClassVar[bool] = False

    def __call__(self, signals: Signals) -> float:
        return 1.0 if signals.reward >= self.delta else 0.0

    def describe(self) -> str:
        return f"binary δ={self.delta:g}"


@dataclass(frozen=True)
class Clip:
    """ω(r) = min(1, max(0, r))."""

    name: ClassVar[str] = "clip"
    needs_logprobs: ClassVar[bool] = False

    def __call__(self, signals: Signals) -> float:
        return _clip(signals.reward)

    def describe(self) -> str:
        return "clip"


@dataclass(frozen=True)
class Sigmoidal:
    """ω(r) = max(0, r / (1 + r))."""

    name: ClassVar[str] = "sigmoidal"
    needs_logprobs: ClassVar[bool] = False

    def __call__(self, signals: Signals) -> float:
        r = signals.reward
        return 0.0 if r <= 0 else _clip(1.0 - 1.0 / (1.0 + r))  # = r/(1+r), monotone in floats

    def describe(self) -> str:
        return "sigmoidal r/(1+r)"


@dataclass(frozen=True)
class Logistic:
    """ω(r) = 1 / (1 + e^{-α(r-δ)})."""

    alpha: float
    delta: float
    name: ClassVar[str] = "logistic"
    needs_logprobs: ClassVar[bool] = False

    def __call__(self, signals: Signals) -> float:
        z = -self.alpha * (signals.reward - self.delta)
        if z > 700:  # e^z overflows; ω is 0 to double precision
            return 0.0
        return 1.0 / (1.0 + math.exp(z))

    def describe(self) -> str:
        return f"logistic α={self.alpha:g} δ={self.delta:g}"


def _ratio(signals: Signals) -> float:
    if signals.draft_logprob is None or signals.target_logprob is None:
        raise ValueError("this weighting needs draft and target log-probabilities")
    return math.exp(min(700.0, signals.target_logprob - signals.draft_logprob))


@dataclass(frozen=True)
class LikelihoodRatio:
    """ω = min(1, α · P_M / P_m) (§2.4): speculative decoding with a tunable α."""

    alpha: float
    name: ClassVar[str] = "likelihood-ratio"
    needs_logprobs: ClassVar[bool] = True

    def __call__(self, signals: Signals) -> float:
        return _clip(self.alpha * _ratio(signals))

    def describe(self) -> str:
        return f"likelihood-ratio α={self.alpha:g}"


@dataclass(frozen=True)
class Hybrid:
    """ω = min(1, β · r · P_M / P_m) (§2.4): reward and likelihood ratio together."""

    beta: float
    name: ClassVar[str] = "hybrid"
    needs_logprobs: ClassVar[bool] = True

    def __call__(self, signals: Signals) -> float:
        return _clip(self.beta * signals.reward * _ratio(signals))

    def describe(self) -> str:
        return f"hybrid β={self.beta:g}"


WEIGHTINGS: tuple[str, ...] = (
    "binary",
    "constant",
    "clip",
    "sigmoidal",
    "logistic",
    "likelihood-ratio",
    "hybrid",
)


def make_weighting(
    name: str, *, delta: float, alpha: float = 10.0, p: float = 0.5, beta: float = 1.0
) -> Weighting:
    """Build a weighting function by name; unknown names get a ConfigError listing the valid ones."""
    for label, value in (("delta", delta), ("alpha", alpha), ("p", p), ("beta", beta)):
        if not math.isfinite(value):
            raise ConfigError(f"{label} must be a finite number, got {value!r}")
    if name == "binary":
        return BinaryStep(delta)
    if name == "constant":
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"p must be in [0, 1] for the constant weighting, got {p:g}")
        return Constant(p)
    if name == "clip":
        return Clip()
    if name == "sigmoidal":
        return Sigmoidal()
    if name in ("logistic", "likelihood-ratio") and alpha <= 0:
        raise ConfigError(f"alpha must be positive for the {name} weighting, got {alpha:g}")
    if name == "hybrid" and beta <= 0:
        raise ConfigError(f"beta must be positive for the hybrid weighting, got {beta:g}")
    if name == "logistic":
        return Logistic(alpha, delta)
    if name == "likelihood-ratio":
        return LikelihoodRatio(alpha)
    if name == "hybrid":
        return Hybrid(beta)
    raise ConfigError(f"unknown weighting {name!r}; choose one of: {', '.join(WEIGHTINGS)}")
