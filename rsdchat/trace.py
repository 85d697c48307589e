"""What happened while answering: the steps, who wrote them, and what they cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rsdchat.types import FinishReason, Generation, Role, Usage


@dataclass(frozen=True)
class RoleCost:
    """Measured cost of one role over a step or an answer."""

    prefill_tokens: int
    generated_tokens: int
    flops: float  # ≈ 2 · parameters · (prefill + generated) tokens
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "prefill_tokens": self.prefill_tokens,
            "generated_tokens": self.generated_tokens,
            "flops": self.flops,
            "seconds": round(self.seconds, 4),
        }


@dataclass
class Ledger:
    """Tokens, FLOPs and seconds per role.

    FLOPs are added when the work is charged, with the parameter count of the model
    that did it, so a ledger stays exact when a reward source is swapped mid-answer.
    """

    usage: dict[Role, Usage] = field(default_factory=dict)
    flops_by_role: dict[Role, float] = field(default_factory=dict)

    def add(self, role: Role, usage: Usage, n_params: int) -> None:
        """Charge `usage` to `role`; FLOPs ≈ 2 · n_params · tokens."""
        self.usage.setdefault(role, Usage())
        self.usage[role] += usage
        self.flops_by_role[role] = self.flops_by_role.get(role, 0.0) + 2.0 * n_params * usage.tokens

    def merge(self, other: Ledger) -> None:
        for role, usage in other.usage.items():
            self.usage.setdefault(role, Usage())
            self.usage[role] += usage
        for role, flops in other.flops_by_role.items():
            self.flops_by_role[role] = self.flops_by_role.get(role, 0.0) + flops

    def cost(self, role: Role) -> RoleCost:
        usage = self.usage.get(role, Usage())
        flops = self.flops_by_role.get(role, 0.0)
        return RoleCost(usage.prefill_tokens, usage.generated_tokens, flops, usage.seconds)

    @property
    def flops(self) -> float:
        return sum(self.flops_by_role.values())

    @property
    def backend_seconds(self) -> float:
        return sum(usage.seconds for usage in self.usage.values())

    def to_dict(self) -> dict[str, Any]:
        costs: dict[str, Any] = {role.value: self.cost(role).to_dict() for role in Role}
        costs["total_flops"] = self.flops
        return costs


@dataclass
class Step:
    """One step of the trace: part of the answer, or a rejected draft (accepted=False)."""

    index: int  # place in the answer; a rejected draft shares it with its replacement
    author: Role  # Role.DRAFT or Role.TARGET
    generation: Generation  # what the model wrote
    accepted: bool = True
    reward: float | None = None  # None when the step was not scored
    omega: float | None = None
    reward_invalid: bool = False  # the reward source returned NaN/inf (rejected)
    seconds: float = 0.0  # wall time from the step's start to its decision
    weighting: str = ""  # the policy in force, e.g. "binary δ=0.7"
    detail: str = ""  # the reward source's explanation, e.g. "1 of 2 equations wrong"
    ledger: Ledger = field(default_factory=Ledger)

    @property
    def text(self) -> str:
        return self.generation.text

    @property
    def finish_reason(self) -> FinishReason:
        return self.generation.finish_reason

    @property
    def tokens(self) -> int:
        """Tokens generated for this step."""
        return self.generation.usage.generated_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "author": self.author.value,
            "text": self.text,
            "reward": self.reward,
            "omega": self.omega,
            "accepted": self.accepted,
            "reward_invalid": self.reward_invalid,
            "finish_reason": self.finish_reason,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 4),
            "weighting": self.weighting,
            "detail": self.detail,
        }


@dataclass
class Trace:
    """Everything about one answer, rejected drafts included."""

    request_id: str
    question: str
    steps: list[Step] = field(default_factory=list)
    finish_reason: str = "running"  # eos | answer | max_steps | max_tokens | cancelled | error
    error: str | None = None
    seconds: float = 0.0  # wall time of the whole request
    ledger: Ledger = field(default_factory=Ledger)

    @property
    def answer_steps(self) -> list[Step]:
        return [step for step in self.steps if step.accepted]

    @property
    def text(self) -> str:
        """The answer: accepted steps only, never a rejected draft."""
        return "".join(step.text for step in self.answer_steps)

    @property
    def drafts(self) -> int:
        """Draft steps scored (accepted or not)."""
        return sum(1 for s in self.steps if s.author is Role.DRAFT and s.reward is not None)

    @property
    def accepted_drafts(self) -> int:
        return sum(1 for s in self.steps if s.author is Role.DRAFT and s.accepted and s.reward is not None)

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted_drafts / self.drafts if self.drafts else None

    @property
    def invalid_rewards(self) -> int:
        return sum(1 for s in self.steps if s.reward_invalid)
