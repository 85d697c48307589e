"""The acceptance criterion A_ω (paper Algorithm 2), as one pure function."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from rsdchat.weighting import Signals, Weighting


@dataclass(frozen=True)
class Decision:
    """Whether a draft step was kept, and why."""

    reward: float
    omega: float  # ω(r) ∈ [0, 1]
    accepted: bool
    u: float | None = None  # the uniform draw, when ω was strictly between 0 and 1
    invalid: bool = False  # the reward was NaN or ±inf: rejected, never trusted


def decide(signals: Signals, weighting: Weighting, rng: random.Random) -> Decision:
    """A_ω(r): accept with probability ω(r).

    Compute ω(r). If ω(r) is 0 or 1 the answer is ω(r) itself (no randomness, so the
    binary step ω = 1(r ≥ δ) is deterministic); otherwise draw u ~ U(0, 1) and accept
    when ω(r) ≥ u. A reward that is not a finite number is rejected.
    """
    if not math.isfinite(signals.reward):
        return Decision(signals.reward, 0.0, accepted=False, invalid=True)
    omega = weighting(signals)
    if omega <= 0.0 or omega >= 1.0:
        return Decision(signals.reward, omega, accepted=omega >= 1.0)
    u = rng.random()
    return Decision(signals.reward, omega, accepted=omega >= u, u=u)
