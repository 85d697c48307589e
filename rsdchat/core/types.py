"""The data that flows between the engine and the backends.

Backends see only these types: a `Context` to continue, a `StepRequest` saying how
far, and they answer with a `Generation` whose `Usage` is what they actually did.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field, replace
from typing import Literal


class Role(str, enum.Enum):
    """Who processed tokens: the cost ledger is kept per role."""

    DRAFT = "draft"
    TARGET = "target"
    REWARD = "reward"


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Context:
    """What a model continues: the conversation plus the assistant reply so far.

    `messages` ends with the user's turn; `response` is the assistant text written so
    far (the accepted steps, joined). Backends render `messages` with the model's own
    chat template, open an assistant turn and append `response` verbatim.
    """

    messages: tuple[Message, ...]
    response: str = ""

    def extend(self, text: str) -> Context:
        """The same conversation with `text` appended to the assistant reply."""
        return replace(self, response=self.response + text)

    @property
    def question(self) -> str:
        """The last user message (what reward models are asked about)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


@dataclass(frozen=True)
class StepRequest:
    """How one step is generated."""

    max_tokens: int  # cap on generated tokens for this step
    stop: tuple[str, ...] = ("\n\n",)  # the step ends at the first of these (kept in the text)
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None  # per-step seed derived from the request seed
    proposal: str | None = None  # text the model is likely to write first (a rejected draft step):
    # a backend that can check it in one batch keeps the part it would write itself (greedy only)


def step_end(text: str, piece: str, stops: tuple[str, ...]) -> int | None:
    """For backends that stream: if `piece` completes a stop string after `text`, the index
    in `text + piece` just after the first such stop (the step ends there), else None.

    A stop's trailing spaces stay out of the step: they belong to the next word (". " ends a
    sentence step at "." and the next step starts " It", as the model writes it; kept, the
    space would be written twice). A stop that `ends_a_step` says is no end is passed over.
    """
    joined = text + piece
    horizon = max(0, len(text) - max(len(s) for s in stops) + 1)
    ends = []
    for stop in stops:
        at = joined.find(stop, horizon)
        while at != -1 and not ends_a_step(joined[:at], stop):
            at = joined.find(stop, at + 1)
        if at != -1:
            ends.append(at + len(kept_of(stop)))
    return max(len(text), min(ends)) if ends else None


_NO_SENTENCE_END = re.compile(r"^\s*(?:\d{1,3}|[A-Za-z]|[ivxIVX]{1,4})$|\b(?:e\.g|i\.e|Mr|Mrs|Ms|Dr|vs)$")
"""What a "." after it ends no sentence: a list number or letter alone ("1. ", "b. ", "iv. ") or
an abbreviation ("e.g. ", "Dr. ")."""


def ends_a_step(before: str, stop: str) -> bool:
    """Whether `stop`, written right after `before` (the step so far), ends the step.

    Every stop does, except a sentence stop (". ") after a list number or an abbreviation:
    cut there, a numbered list became one step per number ("1." alone, judged and kept).
    """
    return not (stop.startswith(".") and _NO_SENTENCE_END.search(before))


def kept_of(stop: str) -> str:
    """What of a stop string stays in the step it ends: all but its trailing spaces."""
    return stop.rstrip(" \t") or stop


@dataclass
class Usage:
    """Work actually done by one model for one call (measured, not estimated)."""

    prefill_tokens: int = 0  # prompt tokens the model had to read (cache misses)
    generated_tokens: int = 0  # tokens sampled
    seconds: float = 0.0  # wall time spent in the backend call

    def __iadd__(self, other: Usage) -> Usage:
        self.prefill_tokens += other.prefill_tokens
        self.generated_tokens += other.generated_tokens
        self.seconds += other.seconds
        return self

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.generated_tokens


FinishReason = Literal["step", "eos", "length"]


@dataclass(frozen=True)
class Assist:
    """Work another model did for a generation (the draft proposing tokens in speculative decoding)."""

    role: Role
    usage: Usage
    n_params: int


@dataclass
class Generation:
    """One step written by a model."""

    text: str  # includes the stop string when finish_reason == "step"
    finish_reason: FinishReason  # "step": hit a stop string; "eos": end of reply; "length": step cap
    usage: Usage = field(default_factory=Usage)
    token_logprobs: tuple[float, ...] | None = None  # log P(token) under the writer, if known
    token_texts: tuple[str, ...] | None = None  # the text of each sampled token, when known
    token_entropies: tuple[float, ...] | None = None  # entropy (nats) of each token's distribution
    assists: tuple[Assist, ...] = ()  # work other models did for this step, charged to their roles

    @property
    def mean_logprob(self) -> float | None:
        """Average token log-probability under the model that wrote it."""
        if not self.token_logprobs:
            return None
        return math.fsum(self.token_logprobs) / len(self.token_logprobs)


@dataclass(frozen=True)
class ModelInfo:
    """What the cost ledger needs to know about a model."""

    name: str
    n_params: int  # parameters, for FLOPs ≈ 2 · n_params · tokens
    backend: str = ""
