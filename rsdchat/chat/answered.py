"""An answer that has ended: its record kept and the chat saved, its cost counted, and a word said.

The word says that the answer failed or was stopped, or what to try. Two answers get advice. A
chat reply cut at blank lines that had none was one step, so RSD judged all of it at once:
`/steps` judges it piece by piece. RSD that came down to target-only (every draft step judged,
and at least a few, rejected) wasted the draft's work: a δ that keeps the best draft, another
reward, or no draft; that is said once per chat. The checks and the advice are pure functions
over the answer's `Trace` and the settings in force.
"""

from __future__ import annotations

import math
from typing import Protocol

from rsdchat.chat.changes import Changes
from rsdchat.chat.choice import Choice
from rsdchat.chat.events import Listener, Notice, Severity, StateChanged, TurnFinished
from rsdchat.chat.live import Answer
from rsdchat.chat.saving import ChatFiles
from rsdchat.chat.transcript import Transcript
from rsdchat.core.policy import Mode, Policy
from rsdchat.core.protocols import RewardSource
from rsdchat.core.trace import Ledger, Trace
from rsdchat.in_force import CHAT_REWARD, Style, chat_style, delta_step, stops
from rsdchat.settings import Settings

ONE_STEP_HINT = 300  # characters: a chat reply this long that was one step gets a word on /steps
ALL_REJECTED_AFTER = 3  # judged drafts: an answer that rejected every one of at least this many gets a word


class _Chat(Protocol):
    """The parts of a chat session that the end of an answer uses."""

    choice: Choice
    transcript: Transcript
    spent: Ledger
    files: ChatFiles
    listener: Listener

    @property
    def policy(self) -> Policy | None: ...
    @property
    def reward(self) -> RewardSource | None: ...
    def notify(self, text: str, severity: Severity = "information", title: str = "") -> None: ...


class Answered:
    """The end of each answer in one chat."""

    def __init__(self, chat: _Chat, changes: Changes) -> None:
        self.chat = chat
        self.changes = changes  # a change staged during the last step goes into force after it
        self._told: Transcript | None = None  # the chat told that RSD came down to target-only

    def finish(self, answer: Answer, trace: Trace) -> None:
        """Keep `answer`'s record, count its cost, save the chat, and say how it ended."""
        chat = self.chat
        turn, record = answer.turn, answer.record(trace)
        chat.transcript.add(record)
        chat.spent.merge(trace.ledger)
        chat.listener(TurnFinished(turn, record, trace))
        last = chat.transcript.records[-2]
        if trace.finish_reason in ("max_steps", "max_tokens") and last["type"] == "change":
            last["from_step"] = None  # installed for a step the budget then did not allow
        self.changes.install(chat.transcript, turn, None)
        failed = chat.files.autosave.write(chat.transcript)
        if failed:
            chat.notify(f"{failed}; /save PATH saves it elsewhere", "error", "the chat is not in the history")
        said = self.said(trace)
        if said is not None:
            chat.listener(said)
        chat.listener(StateChanged())

    def said(self, trace: Trace) -> Notice | None:
        """What to say now that `trace`'s answer has ended (None: nothing)."""
        chat = self.chat
        if trace.finish_reason == "error":
            return Notice(trace.error or "the backend failed", "error", "answer failed")
        if trace.finish_reason == "cancelled":
            said = "stopped; what was written is kept"
            if trace.text.strip():
                said += ", but left out of the next question's context: /keep keeps it there"
            return Notice(said, title="answer stopped")
        if one_long_step(trace, chat.choice, chat.reward):
            return Notice(
                "the reply had no blank line, so it was one step and got one decision; "
                "/steps sentence (or line) judges it piece by piece",
                title="one step",
            )
        settings = chat.choice.settings
        if all_rejected(trace, settings) and self._told is not chat.transcript:
            self._told = chat.transcript  # once per chat
            advice = all_rejected_advice(trace, settings, chat.policy, chat.reward)
            return Notice(advice, "warning", "the target wrote it all")
        return None


def all_rejected(trace: Trace, settings: Settings) -> bool:
    """RSD that came down to target-only: every draft step judged (and at least a few) was rejected."""
    acceptance = trace.acceptance
    rsd = settings.mode is Mode.RSD
    return rsd and acceptance.judged >= ALL_REJECTED_AFTER and acceptance.accepted == 0


def all_rejected_advice(
    trace: Trace, settings: Settings, policy: Policy | None, reward: RewardSource | None
) -> str:
    """What happened, and what to type: a δ that keeps the best draft, another reward, no draft."""
    decisions = [s.decision for s in trace.steps if s.decision is not None]
    rewards = [d.reward for d in decisions if not d.invalid]
    said = f"all {len(decisions)} draft steps were rejected, so the target wrote the answer alone"
    said += " and the draft's work was wasted"
    advice = []
    delta = policy.weighting.threshold if policy is not None else None
    if rewards and delta is not None:
        best = max(rewards)
        step = delta_step(reward)
        suggest = math.floor(best / step + 1e-9) * step
        said += f" (the best scored r {best:.2g} against δ {delta:g})"
        if suggest < delta:
            advice.append(f"/delta {suggest:g} keeps drafts like the best of these")
    name = reward.name if reward is not None else settings.reward
    if name != CHAT_REWARD:
        advice.append(f"/reward {CHAT_REWARD} judges them by the draft's confidence")
    advice.append("/mode target-only skips the draft")
    return f"{said}: " + "; ".join(advice)


def one_long_step(trace: Trace, choice: Choice, reward: RewardSource | None) -> bool:
    """A chat reply cut at blank lines that had none: RSD judged all of it at once."""
    steps = trace.answer_steps
    settings = choice.settings
    chat = chat_style(reward, choice.extras) is Style.CHAT and settings.mode is Mode.RSD
    paragraphs = stops(settings, choice.extras) == ("\n\n",)
    return chat and paragraphs and len(steps) == 1 and len(steps[0].text) >= ONE_STEP_HINT
