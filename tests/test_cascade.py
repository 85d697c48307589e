"""The two-threshold cascade: the free score decides clear steps, the target's check the grey zone."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import pytest

from rsdchat.core.errors import ConfigError
from rsdchat.core.protocols import Score
from rsdchat.core.trace import Step
from rsdchat.core.types import Context, Generation, Message, Role, Usage
from rsdchat.evaluation.runner import deciders
from rsdchat.evaluation.summary import cost_line, summarise
from rsdchat.rewards.cascade import Cascade, least_likely
from rsdchat.settings import Settings

CONTEXT = Context((Message("user", "What is 2 + 2?"),))
STEP = Generation("2 + 2 = 4.\n\n", "step")


@dataclass
class Fixed:
    """A reward source that gives one value and counts its calls."""

    value: float
    name: str
    kind: Literal["process", "outcome"] = "process"
    default_delta: float = 0.5
    bounds: tuple[float, float] | None = (0.0, 1.0)
    n_params: int = 0
    calls: int = field(default=0)

    async def score(self, context: Context, step: Generation) -> Score:
        self.calls += 1
        return Score(
            self.value, Usage(prefill_tokens=7 if self.n_params else 0), detail=f"{self.name} said so"
        )

    async def aclose(self) -> None:
        return None


def cascade(free: float, check: float) -> tuple[Cascade, Fixed]:
    asked = Fixed(check, "target-min-prob", n_params=1_500_000_000)
    return Cascade(Fixed(free, "draft-scorer"), asked, low=0.4, high=0.6, passing=0.1), asked


@pytest.mark.parametrize(
    ("free", "check", "reward", "decider", "asked"),
    [
        (0.8, 0.0, 0.8, "draft-scorer", 0),  # clearly fine: the target is never asked
        (0.2, 1.0, 0.2, "draft-scorer", 0),  # clearly bad: rejected without asking
        (0.5, 0.3, 0.6, "target-min-prob", 1),  # grey zone, the target passes it: high
        (0.4, 0.05, 0.4, "target-min-prob", 1),  # grey zone (low is inside), the target fails it: low
        (0.6, 0.0, 0.6, "draft-scorer", 0),  # high is outside the zone
        (0.5, math.nan, 0.4, "target-min-prob", 1),  # a check that is no number fails
    ],
)
async def test_the_grey_zone_alone_asks_the_target(
    free: float, check: float, reward: float, decider: str, asked: int
) -> None:
    source, target = cascade(free, check)
    score = await source.score(CONTEXT, STEP)
    assert (score.reward, score.decided_by, target.calls) == (reward, decider, asked)
    assert score.usage.prefill_tokens == 7 * asked  # the target's read is charged only when asked
    assert source.low < source.default_delta <= source.high  # δ's default makes ω act as the cascade
    if asked:
        assert score.detail.startswith("grey zone (draft-scorer 0.")


async def test_an_invalid_free_score_stays_invalid() -> None:
    source, target = cascade(math.nan, 1.0)
    score = await source.score(CONTEXT, STEP)
    assert math.isnan(score.reward) and target.calls == 0


def test_the_band_is_checked_where_it_is_set() -> None:
    with pytest.raises(ValueError, match=r"cascade_low \(0.7\) is above cascade_high \(0.6\)"):
        Settings(cascade_low=0.7)
    with pytest.raises(ConfigError, match="cascade_low ≤ cascade_high"):
        Cascade(Fixed(0.5, "a"), Fixed(0.5, "b"), low=0.7, high=0.6, passing=0.1)


def test_least_likely_token() -> None:
    assert least_likely((-0.1, -2.0, -0.5)) == pytest.approx(math.exp(-2.0))
    assert least_likely(()) == 1.0
    assert math.isnan(least_likely((-0.1, 0.5)))  # a "log-probability" above 0 is a faulty server's


def test_eval_counts_which_stage_decided() -> None:
    from rsdchat.core.decision import Decision
    from rsdchat.core.weighting import BinaryStep

    def judged(source: str) -> Step:
        step = Step(0, Role.DRAFT, STEP, reward_source=source)
        step.decision = Decision(0.5, 1.0, True, BinaryStep(0.5))
        return step

    steps = [
        judged("draft-scorer"),
        judged("draft-scorer"),
        judged("target-min-prob"),
        Step(1, Role.TARGET, STEP),
    ]
    counts = deciders(steps)
    assert counts == {"draft-scorer": 2, "target-min-prob": 1}
    record = {
        "id": "q",
        "method": "rsd",
        "correct": True,
        "acceptance": {"judged": 3, "accepted": 3, "decided_by": counts},
    }
    (summary,) = summarise([record])
    assert summary.decided_by == counts
    assert "decided by draft-scorer 67%, target-min-prob 33%" in cost_line(summary)
