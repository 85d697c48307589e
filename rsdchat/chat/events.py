"""What a `ChatSession` tells the front end that shows it (the chat app, a test)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from rsdchat.core.events import Event
from rsdchat.core.policy import Policy
from rsdchat.core.trace import Trace
from rsdchat.files import Record

Severity = Literal["information", "warning", "error"]


@dataclass(frozen=True)
class EngineUpdate:
    """An engine event of the answer to question `turn`, with the policy it was written under."""

    turn: int
    event: Event
    policy: Policy


@dataclass(frozen=True)
class TurnStarted:
    turn: int
    question: str
    retry_of: int | None = None  # the turn it asks again (/retry), which leaves the models' context


@dataclass(frozen=True)
class TurnKept:
    """A stopped answer is kept in the models' context after all (/keep)."""

    turn: int


@dataclass(frozen=True)
class TurnFinished:
    """The answer ended (any reason); `record` is its transcript record."""

    turn: int
    record: Record
    trace: Trace


@dataclass(frozen=True)
class NoteShown:
    """A settings change, noted where it took effect; a note with a known id has new text."""

    note: int
    text: str
    in_turn: bool  # inside the answer being written (else between questions)


@dataclass(frozen=True)
class NoteRemoved:
    """Changes that went back to where they started: the note goes away."""

    note: int


@dataclass(frozen=True)
class Notice:
    text: str
    severity: Severity = "information"
    title: str = ""


@dataclass(frozen=True)
class Loading:
    """The models: being loaded, ready, or failed to load."""

    text: str
    state: Literal["loading", "ready", "failed"]


@dataclass(frozen=True)
class BackendSaid:
    """A line a backend said (`rsdchat.progress`): a server started, ready, started again."""

    text: str


@dataclass(frozen=True)
class Cleared:
    """A new chat: nothing is shown any more."""


@dataclass(frozen=True)
class Replayed:
    """A loaded transcript replaces what is shown."""

    records: list[Record]


@dataclass(frozen=True)
class StateChanged:
    """What is in force, the costs or the state changed: redraw the status."""


ChatEvent = (
    EngineUpdate | TurnStarted | TurnKept | TurnFinished | NoteShown | NoteRemoved | Notice | Loading
    | BackendSaid | Cleared | Replayed | StateChanged
)  # fmt: skip
Listener = Callable[[ChatEvent], None]
