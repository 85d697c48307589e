"""The chat session's events drawn in the transcript: questions, each step as it is written and
judged, notes, answers, loading lines, a chat cleared or replayed.

The app hands each event here in the order the session said it (one Textual message each);
an engine event of any turn but the one being answered is dropped. Notices and state changes
are the app's own (a notification, the side panel).
"""

from __future__ import annotations

from rsdchat.chat.events import (
    BackendSaid,
    ChatEvent,
    Cleared,
    EngineUpdate,
    Loading,
    NoteRemoved,
    NoteShown,
    Replayed,
    TurnFinished,
    TurnKept,
    TurnStarted,
)
from rsdchat.core.events import StepDone, StepScored, StepStarted, TokenText
from rsdchat.tui.widgets.transcript import KEPT, TranscriptView


async def draw(view: TranscriptView, event: ChatEvent, turn: int) -> None:
    """Draw `event` in `view`; `turn` is the question being answered, or the last one."""
    if isinstance(event, EngineUpdate):
        await draw_engine_update(view, event, turn)
    elif isinstance(event, TurnStarted):
        await view.add_question(event.question, event.turn, event.retry_of)
    elif isinstance(event, TurnKept):
        view.mark(event.turn, KEPT)
    elif isinstance(event, TurnFinished):
        await view.finish_turn(event.record)
    elif isinstance(event, NoteShown):
        await view.show_note(event.note, event.text, event.in_turn)
    elif isinstance(event, NoteRemoved):
        await view.remove_note(event.note)
    elif isinstance(event, Loading):
        if event.state == "loading":
            await view.show_message(event.text, "info loading")
        else:
            view.loaded(event.text, failed=event.state == "failed")
    elif isinstance(event, BackendSaid):
        await view.show_message(event.text)
    elif isinstance(event, Cleared):
        await view.clear()
        await view.show_message("new chat")
    elif isinstance(event, Replayed):
        await view.replay(event.records)


async def draw_engine_update(view: TranscriptView, update: EngineUpdate, turn: int) -> None:
    """A step started, its text as it streams, its decision, the step done (of `turn` only)."""
    event = update.event
    if update.turn != turn:
        return
    if isinstance(event, StepStarted):
        await view.start_step(event.index, event.author.value)
    elif isinstance(event, TokenText):
        view.add_text(event.index, event.author.value, event.text)
    elif isinstance(event, StepScored):
        reward = update.policy.reward
        view.show_decision(event.decision, reward.bounds if reward is not None else None, event.detail)
    elif isinstance(event, StepDone):
        step = event.step
        score = step.score if step.decision is None else None
        await view.step_done(step.index, step.author.value, step.text, step.tokens, step.accepted, score)
