"""What happened while answering: the steps, who wrote them, why, and what they cost."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from rsdchat.core.answers import last_boxed
from rsdchat.core.decision import Decision
from rsdchat.core.errors import BackendError
from rsdchat.core.policy import Mode
from rsdchat.core.types import FinishReason, Generation, Role, Usage


@dataclass(frozen=True)
class RoleCost:
    """Measured cost of one role over a step or an answer."""

    prefill_tokens: int
    generated_tokens: int
    flops: float | None  # ≈ 2 · parameters · (prefill + generated) tokens; None: a model of unknown size
    seconds: float

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.generated_tokens

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
    Work on tokens by a model whose size is unknown (a parameter count of 0, such as a
    served model rsdchat cannot size) makes its role's FLOPs, and the total, unknown
    (None; null in JSON), never 0: free is only what read and wrote no tokens.
    """

    usage: dict[Role, Usage] = field(default_factory=dict)
    flops_by_role: dict[Role, float] = field(default_factory=dict)  # the work of models of known size
    unsized: set[Role] = field(default_factory=set)  # roles with work by a model of unknown size

    def add(self, role: Role, usage: Usage, n_params: int) -> None:
        """Charge `usage` to `role`; FLOPs ≈ 2 · n_params · tokens (n_params 0 with tokens: unknown)."""
        self.usage.setdefault(role, Usage())
        self.usage[role] += usage
        if n_params <= 0 and usage.tokens > 0:
            self.unsized.add(role)
        self.flops_by_role[role] = self.flops_by_role.get(role, 0.0) + 2.0 * max(n_params, 0) * usage.tokens

    def merge(self, other: Ledger) -> None:
        for role, usage in other.usage.items():
            self.usage.setdefault(role, Usage())
            self.usage[role] += usage
        for role, flops in other.flops_by_role.items():
            self.flops_by_role[role] = self.flops_by_role.get(role, 0.0) + flops
        self.unsized |= other.unsized

    def cost(self, role: Role) -> RoleCost:
        usage = self.usage.get(role, Usage())
        flops = None if role in self.unsized else self.flops_by_role.get(role, 0.0)
        return RoleCost(usage.prefill_tokens, usage.generated_tokens, flops, usage.seconds)

    @property
    def flops(self) -> float | None:
        """All roles' FLOPs; None when one role's are unknown."""
        return None if self.unsized else sum(self.flops_by_role.values())

    @property
    def backend_seconds(self) -> float:
        return sum(usage.seconds for usage in self.usage.values())

    def to_dict(self) -> dict[str, Any]:
        costs: dict[str, Any] = {role.value: self.cost(role).to_dict() for role in Role}
        costs["total_flops"] = self.flops
        return costs

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ledger:
        """Read back `to_dict` (missing roles count as nothing; FLOPs null are unknown)."""
        ledger = cls()
        for role in Role:
            saved = data.get(role.value)
            if isinstance(saved, dict):
                ledger.usage[role] = Usage(
                    int(saved.get("prefill_tokens", 0)),
                    int(saved.get("generated_tokens", 0)),
                    float(saved.get("seconds", 0.0)),
                )
                flops = saved.get("flops", 0.0)
                if flops is None:
                    ledger.unsized.add(role)
                ledger.flops_by_role[role] = float(flops or 0.0)
        return ledger


@dataclass
class Step:
    """One step of the trace: part of the answer, or a rejected draft (accepted=False)."""

    index: int  # place in the answer; a rejected draft shares it with its replacement
    author: Role  # Role.DRAFT or Role.TARGET
    generation: Generation  # what the model wrote
    mode: Mode = Mode.RSD  # the mode in force when it was written
    accepted: bool = True
    decision: Decision | None = None  # a judged draft step: reward, ω, threshold, u
    score: float | None = None  # a reward shown but not decided on (score_target_steps)
    reward_source: str | None = None  # the reward source that scored it
    detail: str = ""  # the reward source's explanation, e.g. "1 of 2 equations wrong"
    seconds: float = 0.0  # wall time from the step's start to its decision
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

    @property
    def reward(self) -> float | None:
        """The reward the step got (None when it was not scored)."""
        return self.decision.reward if self.decision is not None else self.score

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON (no NaN): a reward that is not a number is null, with `invalid` in the decision."""
        score = self.score if self.score is None or math.isfinite(self.score) else None
        return {
            "index": self.index,
            "author": self.author.value,
            "text": self.text,
            "mode": self.mode.value,
            "accepted": self.accepted,
            "decision": self.decision.to_dict() if self.decision is not None else None,
            "score": score,
            "reward_source": self.reward_source,
            "detail": self.detail,
            "finish_reason": self.finish_reason,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 4),
        }


def verdict_word(accepted: bool, *, sign: bool = True) -> str:
    """What became of a judged draft step: '✓ accepted' or '✗ rejected' (sign=False: the word alone)."""
    word = "accepted" if accepted else "rejected"
    return f"{'✓' if accepted else '✗'} {word}" if sign else word


AcceptanceForm = Literal["sentence", "row", "header", "finish", "export"]


@dataclass(frozen=True)
class Acceptance:
    """How many draft steps were judged and how many of them were kept."""

    judged: int = 0
    accepted: int = 0
    invalid: int = 0  # judged on a reward that was not a number (always rejected)

    @classmethod
    def of(cls, steps: list[Step]) -> Acceptance:
        decisions = [s.decision for s in steps if s.decision is not None]
        return cls(len(decisions), sum(d.accepted for d in decisions), sum(d.invalid for d in decisions))

    def __add__(self, other: Acceptance) -> Acceptance:
        return Acceptance(
            self.judged + other.judged, self.accepted + other.accepted, self.invalid + other.invalid
        )

    @property
    def rate(self) -> float | None:
        return self.accepted / self.judged if self.judged else None

    def describe(self, form: AcceptanceForm = "sentence") -> str:
        """How many drafts were kept, in the words of where it is shown; '' when nothing was judged.

        'sentence' (a solve's summary): '5/7 drafts accepted (71%)', then ', 1 invalid rewards' if any;
        'row' (the side panel's "accepted" row): '5/7 drafts (71%)'; 'header' (a narrow line):
        'accepted 5/7'; 'finish' (the end of an answer): 'drafts accepted 5/7'; 'export'
        (a Markdown transcript): '5/7 drafts accepted'.
        """
        if not self.judged:
            return ""
        fraction = f"{self.accepted}/{self.judged}"
        if form == "header":
            return f"accepted {fraction}"
        if form == "finish":
            return f"drafts accepted {fraction}"
        if form == "export":
            return f"{fraction} drafts accepted"
        percent = f"({self.accepted / self.judged:.0%})"
        if form == "row":
            return f"{fraction} drafts {percent}"
        text = f"{fraction} drafts accepted {percent}"
        return text + (f", {self.invalid} invalid rewards" if self.invalid else "")


@dataclass
class Trace:
    """Everything about one answer, rejected drafts included."""

    request_id: str
    question: str
    steps: list[Step] = field(default_factory=list)
    finish_reason: str = "running"  # eos | answer | max_steps | max_tokens | cancelled | error
    error: str | None = None
    failure: BackendError | None = field(default=None, repr=False, compare=False)  # what `error` says
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
    def final_answer(self) -> str | None:
        """The answer the reply states (its last `\\boxed{}`), None if it states none."""
        return last_boxed(self.text)

    @property
    def acceptance(self) -> Acceptance:
        return Acceptance.of(self.steps)

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON: the steps (rejected drafts included), why it ended, and the cost per role."""
        acceptance = self.acceptance
        return {
            "question": self.question,
            "final_answer": self.final_answer,
            "text": self.text,
            "finish_reason": self.finish_reason,
            "error": self.error,
            "seconds": round(self.seconds, 4),
            "acceptance_rate": acceptance.rate,
            "invalid_rewards": acceptance.invalid,
            "target_share": self.target_share,
            "steps": [step.to_dict() for step in self.steps],
            "cost": self.ledger.to_dict(),
        }

    @property
    def target_share(self) -> float | None:
        """Share of the answer's tokens written by the target (None for an empty answer)."""
        steps = self.answer_steps
        total = sum(step.tokens for step in steps)
        if not total:
            return None
        return sum(step.tokens for step in steps if step.author is Role.TARGET) / total
