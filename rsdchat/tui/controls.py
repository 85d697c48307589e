"""Putting setting changes in force: at once when idle, exactly between two steps while answering.

While an answer is being written, a change is *staged*; the app's engine-event callback,
which runs inside the engine's own flow, installs it right after a step is final and
before the engine reads its policy for the next one. So "applies from the next step"
holds for the reward source too (the engine reads `Engine.reward` when it scores), and
the note in the transcript sits exactly where the change took effect.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

from rsdchat.engine import Engine, Mode, Policy
from rsdchat.errors import ConfigError
from rsdchat.protocols import LogprobModel, RewardSource
from rsdchat.rewards import make_reward
from rsdchat.tui.commands import describe_change, summary
from rsdchat.tui.session import Knobs, policy_for
from rsdchat.tui.transcript import Record, now
from rsdchat.tui.widgets import NoteLine
from rsdchat.types import Role

if TYPE_CHECKING:
    from rsdchat.tui.app import RsdChatApp


@dataclass
class Change:
    """Setting changes not yet described in the transcript (staged, or an idle note to merge into)."""

    before: dict[str, str]  # `summary` before the first of the changes
    old: Knobs
    after: dict[str, str]
    new: Knobs
    reward: RewardSource | None = None
    policy: Policy | None = None
    record: Record | None = None  # the note already written (idle changes)
    widget: NoteLine | None = None

    @property
    def text(self) -> str:
        return describe_change(self.before, self.after, self.old, self.new)


class ChangesApplied(Message):
    """Staged changes were installed between two steps; `next_step` is the first to use them."""

    def __init__(self, turn: int, change: Change, next_step: int | None) -> None:
        super().__init__()
        self.turn, self.change, self.next_step = turn, change, next_step


class Controls:
    """The knobs' way into the engine, and into the transcript."""

    def __init__(self, app: RsdChatApp) -> None:
        self.app = app
        self.staged: Change | None = None  # waiting for the end of the step being written
        self.open_note: Change | None = None  # the last note, while nothing came after it
        self.pending: Knobs | None = None  # from a transcript loaded before the models were
        self.installed: tuple[Change, int | None] | None = None  # in force, not yet in the transcript

    async def change(self, new: Knobs, *, record: bool = True) -> None:
        app, engine = self.app, self.app.engine
        if engine is None:
            raise ConfigError("the models are still loading; try again in a moment")
        await self._ensure_models(engine, new.mode)
        reward = self._reward_for(engine, new)
        if new.mode is Mode.RSD and reward is None:
            raise ConfigError("mode rsd needs a reward source")
        policy = policy_for(new, reward, app.settings)
        if policy.weighting.needs_logprobs and not isinstance(engine.target, LogprobModel):
            raise ConfigError(f"weighting {new.weighting} needs log-probabilities the target does not give")
        old, before = app.knobs, summary(app.knobs, app.reward, app.settings)
        app.knobs, after = new, summary(new, reward, app.settings)
        if app.generating:
            staged = self.staged or Change(before, old, after, new)
            staged.after, staged.new, staged.reward, staged.policy = after, new, reward, policy
            self.staged = staged
            if staged.text:
                app.notify(f"{staged.text} — from the next step", title="setting changed")
        else:
            engine.reward, engine.policy = reward, policy
            if record:
                await self._note(Change(before, old, after, new))
        app.refresh_status()

    def _reward_for(self, engine: Engine, new: Knobs) -> RewardSource | None:
        current = self.app.reward
        if current is not None and new.reward == self.app.knobs.reward:
            return current
        try:
            return make_reward(
                new.reward, draft=engine.draft, target=engine.target, settings=self.app.settings
            )
        except ConfigError:
            if new.mode is Mode.RSD or new.reward != self.app.knobs.reward:
                raise
            return None

    async def _ensure_models(self, engine: Engine, mode: Mode) -> None:
        """Load a model the new mode needs and the runtime did not load (e.g. rsd after target-only)."""
        app = self.app
        needs = {Role.DRAFT: mode is not Mode.TARGET_ONLY, Role.TARGET: mode is not Mode.DRAFT_ONLY}
        for role, needed in needs.items():
            name = app.settings.draft if role is Role.DRAFT else app.settings.target
            if not needed or getattr(engine, role.value) is not None:
                continue
            if app.runtime is None:
                raise ConfigError(f"mode {mode.value} needs a {role.value} model")
            app.notify(f"loading the {role.value} model {name}…")
            model = await asyncio.to_thread(app.runtime.backend_for(role).generator, role, name)
            setattr(engine, role.value, model)

    def install(self, engine: Engine, next_step: int | None) -> None:
        """Called from the engine's flow when a step is final (or the answer ended).

        The note waits for `announce`: whether a next step comes is known only at the next event.
        """
        staged, self.staged = self.staged, None
        if staged is not None and staged.policy is not None:
            engine.reward, engine.policy = staged.reward, staged.policy
            self.installed = (staged, next_step)

    def announce(self, turn: int, *, ended: bool) -> None:
        """Post the note of installed changes: before the next step, or after the answer."""
        installed, self.installed = self.installed, None
        if installed is not None:
            change, next_step = installed
            self.app.post_message(ChangesApplied(turn, change, None if ended else next_step))

    async def install_now(self) -> None:
        """An answer ended without the engine's last event: put staged changes in force anyway."""
        staged, self.staged = self.staged, None
        engine = self.app.engine
        if staged is not None and staged.policy is not None and engine is not None:
            engine.reward, engine.policy = staged.reward, staged.policy
            await self._note(staged)

    async def applied(self, message: ChangesApplied) -> None:
        change = message.change
        if change.text:
            self._record(change, message.next_step)
            await self.app.view.add_note(change.text)
        self.app.refresh_status()

    async def _note(self, change: Change) -> None:
        """Record an idle change; consecutive ones (δ key presses) merge into one note."""
        transcript = self.app.transcript
        merged = self.open_note
        if merged is not None and transcript.records and transcript.records[-1] is merged.record:
            merged.after, merged.new = change.after, change.new
            change = merged
        text = change.text
        if change.record is not None and change.widget is not None:
            if not text:  # back where it started: the note goes away
                transcript.records.pop()
                await change.widget.remove()
                self.open_note = None
                return
            change.record.update(text=text, knobs=change.new.to_dict(), in_force=change.after)
            change.widget.retext(text)
            return
        if text:
            change.record = self._record(change, None)
            change.widget = await self.app.view.add_note(text)
            self.open_note = change

    def _record(self, change: Change, next_step: int | None) -> Record:
        app = self.app
        return app.transcript.add(
            {
                "type": "change",
                "turn": app.turn if next_step is not None else app.transcript.turns,
                "from_step": next_step,
                "text": change.text,
                "knobs": change.new.to_dict(),
                "in_force": change.after,
                "at": now(),
            }
        )
