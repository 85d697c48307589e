"""The acceptance criterion A_ω (paper Algorithm 2), as one pure function."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from rsdchat.core.weighting import Signals, Weighting, weighting_from_dict


@dataclass(frozen=True)
class Decision:
    """Whether a draft step was kept, and why: everything needed to show or replay it."""

    reward: float
    omega: float  # ω(r) ∈ [0, 1]
    accepted: bool
    weighting: Weighting  # the ω in force (its δ is the threshold the reward was held against)
    u: float | None = None  # the uniform draw, when ω was strictly between 0 and 1
    invalid: bool = False  # the reward was NaN or ±inf: rejected, never trusted

    @property
    def threshold(self) -> float | None:
        return self.weighting.threshold

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON: a reward that is not a finite number is written as null (with `invalid`)."""
        return {
            "reward": self.reward if math.isfinite(self.reward) else None,
            "omega": self.omega,
            "accepted": self.accepted,
            "u": self.u,
            "invalid": self.invalid,
            "weighting": self.weighting.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        """Read back `to_dict` (ConfigError from the weighting on a bad record; KeyError if incomplete)."""
        reward = data["reward"]
        return cls(
            reward=float("nan") if reward is None else float(reward),
            omega=float(data["omega"]),
            accepted=bool(data["accepted"]),
            weighting=weighting_from_dict(data["weighting"]),
            u=None if data.get("u") is None else float(data["u"]),
            invalid=bool(data.get("invalid", False)),
        )


def decide(signals: Signals, weighting: Weighting, rng: random.Random) -> Decision:
    """A_ω(r): accept with probability ω(r).

    Compute ω(r). If ω(r) is 0 or 1 the answer is ω(r) itself (no randomness, so the
    binary step ω = 1(r ≥ δ) is deterministic); otherwise draw u ~ U(0, 1) and accept
    when ω(r) ≥ u. A reward that is not a finite number is rejected.
    """
    if not math.isfinite(signals.reward):
        return Decision(signals.reward, 0.0, accepted=False, weighting=weighting, invalid=True)
    omega = weighting(signals)
    if omega <= 0.0 or omega >= 1.0:
        return Decision(signals.reward, omega, accepted=omega >= 1.0, weighting=weighting)
    u = rng.random()
    return Decision(signals.reward, omega, accepted=omega >= u, weighting=weighting, u=u)
