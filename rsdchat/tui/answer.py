"""Answering a question: the engine runs in a worker, its events are drawn as they come.

Each engine event is posted to the app as a message together with the policy and reward
source in force when it was emitted, so the handler (which may run a little later) shows
the δ and reward scale the step was really judged with.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from textual.message import Message as TextualMessage
from textual.worker import Worker, WorkerState

from rsdchat.engine import Engine, Policy, has_final_answer
from rsdchat.evaluation import extract_answer
from rsdchat.events import Event, Finished, StepDone, StepScored, StepStarted, TokenText
from rsdchat.protocols import RewardSource
from rsdchat.trace import Trace
from rsdchat.tui.commands import summary
from rsdchat.tui.session import CostMeter, messages_for, system_prompt
from rsdchat.tui.transcript import answer_record, now, step_record
from rsdchat.tui.widgets import Scored
from rsdchat.types import Message, Role

if TYPE_CHECKING:
    from rsdchat.tui.app import RsdChatApp


class EngineEvent(TextualMessage):
    """An engine event, with the policy and reward source in force when it was emitted."""

    def __init__(self, turn: int, event: Event, policy: Policy, reward: RewardSource | None) -> None:
        super().__init__()
        self.turn, self.event, self.policy, self.reward = turn, event, policy, reward


class Answering:
    """Sends a question to the engine and turns its events into steps on screen and records."""

    def __init__(self, app: RsdChatApp) -> None:
        self.app = app
        self.worker: Worker[None] | None = None  # the solve in progress
        self.failure: str | None = None  # why it ended early

    def stop(self) -> None:
        """Cancel the solve in progress (the engine ends the trace as "cancelled")."""
        if self.app.generating and self.worker is not None:
            self.worker.cancel()

    async def ask(self, question: str) -> None:
        app = self.app
        engine = app.engine
        assert engine is not None
        app.turn = app.transcript.turns + 1
        system = system_prompt(app.knobs, app.reward, app.settings)
        messages = messages_for(system, app.transcript.history(), question)
        app.transcript.add(
            {
                "type": "user",
                "turn": app.turn,
                "content": question,
                "system": system,
                "in_force": summary(app.knobs, app.reward, app.settings),
                "at": now(),
            }
        )
        await app.view.add_question(question, app.turn)
        app.generating, self.failure = True, None
        self.worker = app.run_worker(
            self._solve(engine, messages, app.turn), group="solve", exit_on_error=False
        )
        app.refresh_status()

    async def _solve(self, engine: Engine, messages: list[Message], turn: int) -> None:
        app = self.app
        try:
            await engine.solve(
                messages,
                request_id=str(turn),
                seed=app.settings.seed + turn,
                emit=lambda event: self._emit(engine, turn, event),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported by the Finished event (trace.error), if it came
            self.failure = str(exc) or type(exc).__name__

    def _emit(self, engine: Engine, turn: int, event: Event) -> None:
        """Called by the engine, in its own flow: forward the event, install staged changes."""
        app, ended = self.app, isinstance(event, Finished)
        if not ended:
            app.controls.announce(turn, ended=False)  # changes installed before this step
        app.post_message(EngineEvent(turn, event, engine.policy, engine.reward))
        if ended or (isinstance(event, StepDone) and event.step.accepted):
            app.controls.install(engine, event.step.index + 1 if isinstance(event, StepDone) else None)
        if ended:
            app.controls.announce(turn, ended=True)

    async def show(self, message: EngineEvent) -> None:
        app = self.app
        event, view = message.event, app.view
        if message.turn != app.turn:
            return
        if isinstance(event, StepStarted):
            await view.start_step(event.index, event.author.value)
        elif isinstance(event, TokenText):
            view.add_text(event.index, event.author.value, event.text)
        elif isinstance(event, StepScored):
            d, reward = event.decision, message.reward
            delta = getattr(message.policy.weighting, "delta", None)
            bounded = reward is None or reward.kind == "process"
            view.show_score(Scored(d.reward, d.omega, d.accepted, delta, bounded, d.u, d.invalid))
        elif isinstance(event, StepDone):
            step = event.step
            app.transcript.add(step_record(message.turn, step, message.reward, message.policy.mode.value))
            app.live_cost.add(step.ledger)
            if step.author is Role.DRAFT and step.reward is not None:
                app.drafts_scored += 1
                app.drafts_accepted += step.accepted
            await view.step_done(step.index, step.author.value, step.text, step.tokens, step.accepted)
            app.refresh_status()
        elif isinstance(event, Finished):
            await self.finish(message.turn, event.trace)

    async def finish(self, turn: int, trace: Trace) -> None:
        app = self.app
        final = extract_answer(trace.text) if has_final_answer(trace.text) else None
        record = answer_record(turn, trace, final)
        current = app.view.current
        if current is not None and current.text.strip():  # a stopped step: kept, never lost
            record.update(partial=current.text, partial_index=current.index, partial_author=current.author)
        app.transcript.add(record)
        app.done_cost.add(trace.ledger)
        app.live_cost = CostMeter()
        await app.view.finish_turn(record)
        app.generating, self.worker = False, None
        if trace.finish_reason == "error":
            app.notify(
                trace.error or "the backend failed", title="answer failed", severity="error", timeout=15
            )
        elif trace.finish_reason == "cancelled":
            app.notify("stopped; what was written is kept", title="answer stopped")
        app.refresh_status()

    async def worker_changed(self, event: Worker.StateChanged) -> None:
        """A solve that ended without its Finished event (it never started) must not block the chat."""
        app = self.app
        if event.worker is not self.worker or event.state not in (
            WorkerState.SUCCESS,
            WorkerState.ERROR,
            WorkerState.CANCELLED,
        ):
            return
        if app.generating:
            error = self.failure or str(event.worker.error or "stopped")
            trace = Trace(str(app.turn), "", finish_reason="error", error=error)
            await self.finish(app.turn, trace)
        await app.controls.install_now()
