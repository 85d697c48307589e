"""When a settings change takes effect, and where the transcript notes it.

A change made while idle is in force at once, for the next question; several in a row
with nothing in between (five presses of the δ key) make one note, and a note whose
changes went back to where they started goes away. A change made while answering is
*staged*: it goes into force when the engine asks for the next step's policy, and is
noted exactly there (or after the answer, when no step followed).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from rsdchat.chat.choice import Choice
from rsdchat.chat.commands import describe_change
from rsdchat.chat.events import Listener, NoteRemoved, NoteShown
from rsdchat.chat.transcript import Transcript, now
from rsdchat.core.policy import Policy
from rsdchat.files import Record
from rsdchat.in_force import InForce


@dataclass
class _Staged:
    """Changes made while answering, not yet in force."""

    before: InForce  # in force before the first of them
    after: InForce
    choice: Choice


@dataclass
class _Open:
    """The last idle note, while nothing came after it: the next idle change merges into it."""

    id: int
    record: Record
    before: InForce


class Changes:
    """The policy in force, a change staged for the next step, and the `change` records."""

    def __init__(self, emit: Listener) -> None:
        self.policy: Policy | None = None  # in force (None until the models are loaded)
        self._staged: _Staged | None = None
        self._emit = emit
        self._ids = itertools.count(1)
        self._open: _Open | None = None

    @property
    def staged(self) -> bool:
        return self._staged is not None

    def apply(
        self,
        transcript: Transcript,
        choice: Choice,
        before: InForce | None,
        after: InForce,
        *,
        answering: bool,
        record: bool = True,
    ) -> str:
        """Put `after` in force now, or (`answering`) from the next step; what is staged, in words."""
        if answering:
            first = self._staged.before if self._staged is not None else before
            assert first is not None  # answering implies a policy in force
            self._staged = _Staged(first, after, choice)
            return describe_change(first, after)
        self.policy = after.policy
        if record and before is not None:
            self.note(transcript, choice, before, after)
        return ""

    def install(self, transcript: Transcript, turn: int, from_step: int | None) -> None:
        """Put the staged change in force; it applies from step `from_step` of `turn` (None: after it)."""
        staged, self._staged = self._staged, None
        if staged is not None:
            self.policy = staged.after.policy
            self.note(transcript, staged.choice, staged.before, staged.after, turn=turn, from_step=from_step)

    def close(self) -> None:
        """Something else happened (a question, a new chat): the next change gets its own note."""
        self._open = None

    def note_models(self, transcript: Transcript, text: str, fields: Record) -> None:
        """Note another model put in a role (`/model`, while idle): a note of its own, never merged.

        `fields`: what the record keeps besides where and when (`models`, `knobs`, `in_force`).
        """
        where = {"type": "change", "turn": transcript.turns, "from_step": None, "text": text}
        transcript.add(where | fields | {"at": now()})
        self._open = None
        self._emit(NoteShown(next(self._ids), text, in_turn=False))

    def note(
        self,
        transcript: Transcript,
        choice: Choice,
        before: InForce,
        after: InForce,
        *,
        turn: int | None = None,
        from_step: int | None = None,
    ) -> None:
        """Note the change `before` → `after` (what the chat chose after it: `choice`).

        `turn` is the answer it was installed in (None: while idle), `from_step` the first
        step it applied to (None: from the next question).
        """
        idle = turn is None and from_step is None
        merged = self._open
        last = transcript.records[-1] if len(transcript.records) > transcript.saved else None  # not on disk
        if not (idle and merged is not None and last is merged.record):
            merged = None
        text = describe_change(merged.before if merged is not None else before, after)
        fields = {"text": text, "knobs": choice.to_dict(), "in_force": after.to_dict()}
        if merged is not None:
            if text:
                merged.record.update(fields)
                self._emit(NoteShown(merged.id, text, in_turn=False))
            else:  # back where it started
                transcript.records.pop()
                self._open = None
                self._emit(NoteRemoved(merged.id))
            return
        if not text:
            return
        where = {
            "type": "change",
            "turn": turn if turn is not None else transcript.turns,
            "from_step": from_step,
        }
        record = transcript.add(where | fields | {"at": now()})
        note = _Open(next(self._ids), record, before)
        self._open = note if idle else None
        self._emit(NoteShown(note.id, text, in_turn=from_step is not None))
