"""The answer being written: what the engine has said about it so far."""

from __future__ import annotations

from dataclasses import dataclass, field

from rsdchat.chat.transcript import answer_record, step_record
from rsdchat.core.events import Event, Finished, StepDone, StepStarted, TokenText
from rsdchat.core.policy import Policy
from rsdchat.core.trace import Ledger, Trace
from rsdchat.core.types import Role
from rsdchat.files import Record


@dataclass
class _Partial:
    """The step being written, as streamed so far (kept if the answer is stopped)."""

    index: int
    author: Role
    text: str = ""


@dataclass
class Answer:
    """One answer in progress: the step being streamed, the cost so far, the final trace."""

    turn: int
    question: str
    live: Ledger = field(default_factory=Ledger)  # the steps done so far
    finished: Trace | None = None  # from the engine's Finished event
    _partial: _Partial | None = None

    def follow(self, event: Event, policy: Policy) -> Record | None:
        """Keep track of one engine event; for a finished step, its transcript record."""
        if isinstance(event, StepStarted):
            self._partial = _Partial(event.index, event.author)
        elif isinstance(event, TokenText) and self._partial is not None:
            self._partial.text += event.text
        elif isinstance(event, StepDone):
            step, self._partial = event.step, None
            self.live.merge(step.ledger)
            bounds = policy.reward.bounds if policy.reward is not None else None
            return step_record(self.turn, step, bounds)
        elif isinstance(event, Finished):
            self.finished = event.trace
        return None

    def trace(self, reason: str, error: str | None = None) -> Trace:
        """The engine's trace; one made here (with `reason`) if the solve ended without it."""
        trace = self.finished or Trace(str(self.turn), self.question, finish_reason=reason)
        trace.error = trace.error or error
        return trace

    def record(self, trace: Trace) -> Record:
        """The `answer` record; a step stopped while being written is kept in it."""
        record = answer_record(self.turn, trace)
        partial = self._partial
        if partial is not None and partial.text.strip():
            record.update(
                partial=partial.text, partial_index=partial.index, partial_author=partial.author.value
            )
        return record
