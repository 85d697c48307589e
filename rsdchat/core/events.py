"""Events the engine emits while it works; the chat app and `rsdchat solve`'s live view consume them.

Every event names the request it belongs to, so one sink can follow many requests
in flight. Steps are numbered by their place in the answer: a rejected draft and the
target step that replaced it share an index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rsdchat.core.types import Role

if TYPE_CHECKING:
    from rsdchat.core.decision import Decision
    from rsdchat.core.trace import Step, Trace


@dataclass(frozen=True)
class StepStarted:
    request_id: str
    index: int
    author: Role


@dataclass(frozen=True)
class TokenText:
    """A piece of the step being written (streamed as it is generated)."""

    request_id: str
    index: int
    author: Role
    text: str


@dataclass(frozen=True)
class StepScored:
    """The draft step got its reward and the acceptance decision."""

    request_id: str
    index: int
    decision: Decision
    source: str = ""  # the reward (or cascade stage) that decided
    detail: str = ""  # its explanation, e.g. "1 of 2 equations wrong"


@dataclass(frozen=True)
class StepDone:
    """A step is final: an accepted step of the answer, or a rejected draft."""

    request_id: str
    step: Step


@dataclass(frozen=True)
class Finished:
    """The request ended (any reason, errors included); the trace holds the cost."""

    request_id: str
    trace: Trace


Event = StepStarted | TokenText | StepScored | StepDone | Finished
EventSink = Callable[[Event], None]


def ignore(event: object) -> None:
    """A sink that drops everything (the engine's events, a chat's)."""
