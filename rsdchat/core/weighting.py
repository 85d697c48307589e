"""Weighting functions ω(r) ∈ [0, 1] (paper Table 1 and §2.4), and their registry.

ω says how much the draft's step is trusted. Reward-based variants read only the
reward; the likelihood-ratio and hybrid variants also read the step's log-probability
under the draft (P_m) and the target (P_M). Step probabilities are taken per token
(geometric mean), so a long step is not rejected merely for being long.

Each weighting is a frozen dataclass whose fields are its parameters; it declares its
`name`, and everything else — building one by name (`make_weighting`), the chat app's
`/weighting` parser and parameter table, `describe()`, saving and loading — derives
from that one declaration (`WEIGHTINGS`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from rsdchat.core.errors import ConfigError

SYMBOLS: Mapping[str, str] = MappingProxyType({"delta": "δ", "alpha": "α", "p": "p", "beta": "β"})


@dataclass(frozen=True)
class Signals:
    """What a weighting function may look at for one draft step."""

    reward: float
    draft_logprob: float | None = None  # mean log P_m(token) over the step
    target_logprob: float | None = None  # mean log P_M(token) over the step


@dataclass(frozen=True)
class Weighting:
    """ω: signals → [0, 1], non-decreasing in the reward (Prop. 2.2). Subclasses are the registry."""

    name: ClassVar[str]
    needs_logprobs: ClassVar[bool] = False  # reads P_m and P_M, not only the reward

    def __call__(self, signals: Signals) -> float:
        raise NotImplementedError

    @classmethod
    def params(cls) -> tuple[str, ...]:
        """The parameters, in the order `/weighting NAME ...` takes them."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @property
    def threshold(self) -> float | None:
        """δ, for the weightings that have one (what "close to δ" is measured against)."""
        return self.values().get("delta")

    def values(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.params()}

    def describe(self) -> str:
        """'binary δ=0.88', 'logistic α=10 δ=0.7', 'clip'."""
        shown = " ".join(f"{SYMBOLS.get(k, k)}={v:g}" for k, v in self.values().items())
        return f"{self.name} {shown}".strip()

    def to_dict(self) -> dict[str, Any]:
        """{"name": ..., parameter: value, ...}: what transcripts and results store."""
        return {"name": self.name, **self.values()}


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def _positive(name: str, label: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{label} must be positive for the {name} weighting, got {value:g}")


@dataclass(frozen=True)
class BinaryStep(Weighting):
    """ω(r) = 1(r ≥ δ): the default, optimal under a budget (Prop. 2.3)."""

    delta: float
    name: ClassVar[str] = "binary"

    def __call__(self, signals: Signals) -> float:
        return 1.0 if signals.reward >= self.delta else 0.0


@dataclass(frozen=True)
class Constant(Weighting):
    """ω(r) = p: accept a fixed share of drafts whatever their reward."""

    p: float
    name: ClassVar[str] = "constant"

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"p must be in [0, 1] for the constant weighting, got {self.p:g}")

    def __call__(self, signals: Signals) -> float:
        return self.p


@dataclass(frozen=True)
class Clip(Weighting):
    """ω(r) = min(1, max(0, r))."""

    name: ClassVar[str] = "clip"

    def __call__(self, signals: Signals) -> float:
        return _clip(signals.reward)


@dataclass(frozen=True)
class Sigmoidal(Weighting):
    """ω(r) = max(0, r / (1 + r))."""

    name: ClassVar[str] = "sigmoidal"

    def __call__(self, signals: Signals) -> float:
        r = signals.reward
        return 0.0 if r <= 0 else _clip(1.0 - 1.0 / (1.0 + r))  # = r/(1+r), monotone in floats


@dataclass(frozen=True)
class Logistic(Weighting):
    """ω(r) = 1 / (1 + e^{-α(r-δ)})."""

    alpha: float
    delta: float
    name: ClassVar[str] = "logistic"

    def __post_init__(self) -> None:
        _positive(self.name, "alpha", self.alpha)

    def __call__(self, signals: Signals) -> float:
        z = -self.alpha * (signals.reward - self.delta)
        if z > 700:  # e^z overflows; ω is 0 to double precision
            return 0.0
        return 1.0 / (1.0 + math.exp(z))


def _ratio(signals: Signals) -> float:
    if signals.draft_logprob is None or signals.target_logprob is None:
        raise ValueError("this weighting needs draft and target log-probabilities")
    return math.exp(min(700.0, signals.target_logprob - signals.draft_logprob))


@dataclass(frozen=True)
class LikelihoodRatio(Weighting):
    """ω = min(1, α · P_M / P_m) (§2.4): speculative decoding with a tunable α."""

    alpha: float
    name: ClassVar[str] = "likelihood-ratio"
    needs_logprobs: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _positive(self.name, "alpha", self.alpha)

    def __call__(self, signals: Signals) -> float:
        return _clip(self.alpha * _ratio(signals))


@dataclass(frozen=True)
class Hybrid(Weighting):
    """ω = min(1, β · r · P_M / P_m) (§2.4): reward and likelihood ratio together."""

    beta: float
    name: ClassVar[str] = "hybrid"
    needs_logprobs: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _positive(self.name, "beta", self.beta)

    def __call__(self, signals: Signals) -> float:
        return _clip(self.beta * signals.reward * _ratio(signals))


WEIGHTINGS: Mapping[str, type[Weighting]] = MappingProxyType(
    {cls.name: cls for cls in (BinaryStep, Constant, Clip, Sigmoidal, Logistic, LikelihoodRatio, Hybrid)}
)


def make_weighting(name: str, **values: float) -> Weighting:
    """The weighting `name` with its parameters taken from `values` (others are ignored).

    Unknown names, missing, non-finite or out-of-range parameters get a ConfigError.
    """
    cls = WEIGHTINGS.get(name)
    if cls is None:
        raise ConfigError(f"unknown weighting {name!r}; choose one of: {', '.join(WEIGHTINGS)}")
    chosen = {}
    for param in cls.params():
        value = values.get(param)
        if value is None:
            raise ConfigError(f"the {name} weighting needs {SYMBOLS.get(param, param)} ({param})")
        if not (isinstance(value, int | float) and math.isfinite(value)):
            raise ConfigError(f"{param} must be a finite number, got {value!r}")
        chosen[param] = float(value)
    return cls(**chosen)


def weighting_from_dict(data: Mapping[str, Any]) -> Weighting:
    """The inverse of `Weighting.to_dict` (a ConfigError names what is wrong)."""
    name = data.get("name")
    if not isinstance(name, str):
        raise ConfigError(f"a weighting needs a name, got {data!r}")
    return make_weighting(name, **{k: v for k, v in data.items() if k != "name"})
