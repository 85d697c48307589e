"""What the models are told: the system prompts, and the one way a conversation is built."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rsdchat.core.types import Message

MATH_SYSTEM_PROMPT = (
    "Please reason step by step, separating the steps with a blank line, "
    "and put your final answer within \\boxed{}."
)
CHAT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Write your reply in short paragraphs separated by blank lines."
)


@dataclass(frozen=True)
class Turn:
    """One finished exchange, as the models will see it in later questions."""

    question: str
    answer: str


def build_messages(system: str, question: str, history: Sequence[Turn] = ()) -> list[Message]:
    """The conversation sent to the models: system prompt, earlier turns, the new question.

    Turns that produced no text (stopped or failed at once) are left out, so the models
    never see two user turns in a row.
    """
    messages = [Message("system", system)] if system.strip() else []
    for turn in history:
        if turn.answer.strip():
            messages += [Message("user", turn.question), Message("assistant", turn.answer)]
    messages.append(Message("user", question))
    return messages
