"""The acceptance criterion A_ω (paper Algorithm 2): `decide`."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable

import pytest

from rsdchat.core.decision import Decision, decide
from rsdchat.core.weighting import BinaryStep, Clip, Constant, Hybrid, Logistic, Signals, Weighting


class FixedU(random.Random):
    """An rng whose uniform draw is chosen by the test."""

    def __init__(self, u: float) -> None:
        super().__init__(0)
        self.u = u
        self.draws = 0

    def random(self) -> float:
        self.draws += 1
        return self.u


@pytest.mark.parametrize(
    ("weighting", "reward", "accepted"),
    [
        (BinaryStep(0.7), 0.7, True),
        (BinaryStep(0.7), 0.95, True),
        (BinaryStep(0.7), 0.69, False),
        (BinaryStep(0.7), -4.0, False),
        (Constant(1.0), -10.0, True),
        (Constant(0.0), 10.0, False),
        (Clip(), 1.0, True),
        (Clip(), 3.0, True),
        (Clip(), 0.0, False),
        (Clip(), -0.5, False),
        (Logistic(10.0, 0.0), -100.0, False),  # ω underflows to exactly 0
        (Logistic(10.0, 0.0), 100.0, True),  # ω rounds to exactly 1
    ],
)
def test_omega_zero_or_one_is_deterministic(weighting: Weighting, reward: float, accepted: bool) -> None:
    rng = random.Random(1234)
    before = rng.getstate()
    decision = decide(Signals(reward), weighting, rng)
    assert rng.getstate() == before  # no draw consumed
    assert decision.omega == (1.0 if accepted else 0.0)
    assert decision.accepted is accepted
    assert decision.u is None
    assert not decision.invalid
    assert decision.reward == reward


@pytest.mark.parametrize("reward", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("weighting", [BinaryStep(0.7), Clip(), Constant(1.0), Logistic(1.0, 0.0)])
def test_non_finite_reward_is_rejected_as_invalid(weighting: Weighting, reward: float) -> None:
    rng = random.Random(7)
    before = rng.getstate()
    decision = decide(Signals(reward), weighting, rng)
    assert decision.accepted is False
    assert decision.invalid is True
    assert decision.omega == 0.0
    assert decision.u is None
    assert rng.getstate() == before
    assert decision.reward is reward or (math.isnan(reward) and math.isnan(decision.reward))


def test_likelihood_weighting_with_non_finite_reward_does_not_need_logprobs() -> None:
    decision = decide(Signals(math.nan), Hybrid(1.0), random.Random(0))
    assert decision.invalid and not decision.accepted


@pytest.mark.parametrize(("u", "accepted"), [(0.3, True), (0.29, True), (math.nextafter(0.3, 1.0), False)])
def test_stochastic_accepts_iff_omega_at_least_u(u: float, accepted: bool) -> None:
    rng = FixedU(u)
    decision = decide(Signals(0.3), Clip(), rng)
    assert rng.draws == 1
    assert decision.omega == 0.3
    assert decision.u == u
    assert decision.accepted is accepted
    assert not decision.invalid


LOGIT_03 = math.log(0.3 / 0.7)  # Logistic(1, 0) at this reward gives ω = 0.3
Criterion = Callable[[Signals, Weighting, random.Random], Decision]


def frequency_fits(weighting: Weighting, reward: float, criterion: Criterion = decide) -> bool:
    """Whether `criterion` accepts as often as ω(reward) says, over n seeded draws.

    Bernoulli(ω): SE = sqrt(ω(1−ω)/n) = sqrt(0.21/20000) ≈ 0.00324 at ω = 0.3; 4.5·SE ≈ 0.0146.
    A correct criterion falls outside with probability ≈ 7e-6 (and the seed is fixed).
    """
    signals, n = Signals(reward), 20_000
    omega = weighting(signals)
    rng = random.Random(20240531)
    frequency = sum(criterion(signals, weighting, rng).accepted for _ in range(n)) / n
    return abs(frequency - omega) < 4.5 * math.sqrt(omega * (1 - omega) / n)


@pytest.mark.parametrize(
    ("weighting", "reward"), [(Constant(0.3), 5.0), (Logistic(1.0, 0.0), LOGIT_03), (Clip(), 0.3)]
)
def test_acceptance_frequency_matches_omega(weighting: Weighting, reward: float) -> None:
    signals = Signals(reward)
    omega = weighting(signals)
    assert omega == pytest.approx(0.3, abs=1e-12)
    assert frequency_fits(weighting, reward)
    rng = random.Random(20240531)
    decisions = [decide(signals, weighting, rng) for _ in range(20_000)]
    assert all(d.u is not None and d.accepted == (d.u <= omega) for d in decisions)
    assert all(0.0 <= d.u < 1.0 for d in decisions if d.u is not None)


def test_the_frequency_check_rejects_a_criterion_that_accepts_with_1_minus_omega_or_omega_squared() -> None:
    """The check above has the power to see `decide` accepting with 1 − ω or ω² instead of ω."""

    def one_minus(signals: Signals, weighting: Weighting, rng: random.Random) -> Decision:
        return decide(signals, Constant(1 - weighting(signals)), rng)

    def squared(signals: Signals, weighting: Weighting, rng: random.Random) -> Decision:
        return decide(signals, Constant(weighting(signals) ** 2), rng)

    assert frequency_fits(Clip(), 0.3)
    assert not frequency_fits(Clip(), 0.3, one_minus)
    assert not frequency_fits(Clip(), 0.3, squared)


def _run(seed: int, n: int = 300) -> list[tuple[bool, float | None]]:
    rng = random.Random(seed)
    weighting = Logistic(2.0, 0.5)
    rewards = [i / n for i in range(n)]
    return [(d.accepted, d.u) for d in (decide(Signals(r), weighting, rng) for r in rewards)]


def test_same_seed_same_decisions() -> None:
    assert _run(11) == _run(11)
    assert _run(11) != _run(12)


def test_deterministic_decisions_do_not_shift_later_draws() -> None:
    """A binary decision in between must not consume randomness of the next stochastic one."""
    plain, mixed = random.Random(5), random.Random(5)
    expected = [decide(Signals(0.4), Clip(), plain).u for _ in range(10)]
    got = []
    for _ in range(10):
        decide(Signals(0.9), BinaryStep(0.7), mixed)
        got.append(decide(Signals(0.4), Clip(), mixed).u)
    assert got == expected


@pytest.mark.parametrize(
    ("weighting", "reward", "u"),
    [
        (BinaryStep(0.7), 0.9, 0.99),
        (Clip(), 0.4, 0.3),
        (Logistic(10.0, 0.5), 0.52, 0.5),
        (Clip(), math.nan, 0.1),
    ],
)
def test_a_decision_is_saved_as_strict_json_and_read_back(
    weighting: Weighting, reward: float, u: float
) -> None:
    decision = decide(Signals(reward), weighting, FixedU(u))
    saved = json.loads(json.dumps(decision.to_dict(), allow_nan=False))  # strict JSON: no NaN
    again = Decision.from_dict(saved)
    assert again.weighting == weighting and again.threshold == weighting.threshold
    assert (again.omega, again.accepted, again.u, again.invalid) == (
        decision.omega,
        decision.accepted,
        decision.u,
        decision.invalid,
    )
    assert again.reward == reward or (math.isnan(reward) and math.isnan(again.reward) and again.invalid)
