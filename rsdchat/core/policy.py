"""How answers are written: who writes (the mode), who judges (reward and ω), and the budgets.

The engine is *told* its policy: `Engine.solve` takes a `Policy`, or a `PolicySource`
that it asks once at the start of every step. A front end that lets the user change
settings mid-answer hands the engine a source; whatever the source returns for step
i is what step i is written and judged with ("a change applies from the next step").
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from rsdchat.core.protocols import RewardSource
from rsdchat.core.types import Role
from rsdchat.core.weighting import BinaryStep, Weighting


class Mode(str, enum.Enum):
    """Who writes the steps."""

    RSD = "rsd"  # the draft, and the target where the reward rejects the draft
    TARGET_ONLY = "target-only"
    DRAFT_ONLY = "draft-only"

    @property
    def roles(self) -> tuple[Role, ...]:
        """The models (and reward) this mode runs."""
        if self is Mode.TARGET_ONLY:
            return (Role.TARGET,)
        if self is Mode.DRAFT_ONLY:
            return (Role.DRAFT,)
        return (Role.DRAFT, Role.TARGET, Role.REWARD)


@dataclass(frozen=True)
class Policy:
    """Everything that decides how one step is written. Frozen: a change is a new Policy."""

    mode: Mode = Mode.RSD
    reward: RewardSource | None = None  # r(y_i | x, y_<i); needed in mode rsd
    weighting: Weighting = field(default_factory=lambda: BinaryStep(0.7))  # ω(r)
    max_steps: int = 32
    max_step_tokens: int = 256  # per step: no single step may eat the budget
    max_tokens: int = 1024  # generated tokens in the answer
    stop: tuple[str, ...] = ("\n\n",)  # a step ends at a blank line
    temperature: float = 0.0
    top_p: float = 1.0
    stop_at_answer: bool = True  # end once a step holds a complete \boxed{...}
    score_target_steps: bool = False  # also score the target's steps (shown, never decided on)
    reuse_draft: bool = False  # the target checks a rejected draft in batches and keeps what it agrees with
    keep_pen: int = 0  # after rewriting a rejected step the target writes the next keep_pen too

    def describe(self) -> str:
        """'rsd · arithmetic · binary δ=0.88', 'target-only'."""
        if self.mode is not Mode.RSD:
            return str(self.mode.value)
        reward = self.reward.name if self.reward is not None else "no reward"
        return f"rsd · {reward} · {self.weighting.describe()}"


PolicySource = Callable[[int], Policy]
"""Asked by the engine at the start of step `index` (0-based): the policy for that step."""


def fixed(policy: Policy) -> PolicySource:
    """A source that always answers `policy`."""
    return lambda index: policy
