"""rsdchat's chat app: watch Reward-Guided Speculative Decoding write each answer, step by step.

The app holds the chat's state and routes input; `Answering` runs the engine and draws
its events, `Controls` puts setting changes in force, `SlashHandler` runs /commands.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.notifications import SeverityLevel
from textual.widgets import Collapsible, Footer, Header, Input
from textual.worker import Worker

from rsdchat.engine import Engine
from rsdchat.errors import ConfigError
from rsdchat.protocols import RewardSource
from rsdchat.rewards import make_reward
from rsdchat.runtime import Runtime, open_runtime
from rsdchat.settings import Settings
from rsdchat.tui.answer import Answering, EngineEvent
from rsdchat.tui.commands import ChatCommands, PaletteEntry, help_text
from rsdchat.tui.controls import ChangesApplied, Controls
from rsdchat.tui.session import (
    CostMeter,
    Knobs,
    nudge_delta,
    uses_delta,
)
from rsdchat.tui.slash import SlashHandler
from rsdchat.tui.status import status_rows
from rsdchat.tui.styles import CSS
from rsdchat.tui.transcript import Transcript
from rsdchat.tui.view import TranscriptView
from rsdchat.tui.widgets import StatusPanel

NARROW = 100  # columns below which the side panel starts hidden


class RsdChatApp(App[None]):
    """Chat with a draft/target pair; every step shows who wrote it, its reward and the decision."""

    TITLE = "rsdchat"
    CSS = CSS
    COMMANDS = App.COMMANDS | {ChatCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+up,f8", "delta(1)", "δ+", key_display="^↑"),
        Binding("ctrl+down,f7", "delta(-1)", "δ−", key_display="^↓"),
        Binding("f4", "toggle_panel", "Panel"),
        Binding("f1", "help", "Help"),
    ]

    def __init__(self, source: Runtime | Settings, *, resume: Path | Transcript | None = None) -> None:
        super().__init__()
        self.runtime: Runtime | None = source if isinstance(source, Runtime) else None
        self.settings: Settings = source.settings if isinstance(source, Runtime) else source
        self._owns_runtime = self.runtime is None
        self.knobs = Knobs.from_settings(self.settings)
        self.transcript = Transcript.start(self.settings, self.knobs, {})
        self._resume = resume
        self.turn = 0
        self.generating = False
        self.load_error: str | None = None
        self.done_cost, self.live_cost = CostMeter(), CostMeter()
        self.drafts_scored = self.drafts_accepted = 0
        self.slash = SlashHandler(self)
        self.controls = Controls(self)
        self.answering = Answering(self)
        self._quit_asked = False
        self.notices: list[tuple[str, str]] = []  # (severity, text) of every notification shown

    # -- state ------------------------------------------------------------------------

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Show a notification (plain text by default: messages quote what the user typed)."""
        self.notices.append((severity, f"{title}: {message}" if title else message))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    @property
    def engine(self) -> Engine | None:
        return self.runtime.engine if self.runtime is not None else None

    @property
    def reward(self) -> RewardSource | None:
        """The reward source for the next step (a staged one included)."""
        if self.controls.staged is not None:
            return self.controls.staged.reward
        return self.engine.reward if self.engine is not None else None

    @property
    def view(self) -> TranscriptView:
        return self.query_one(TranscriptView)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            yield TranscriptView()
            yield StatusPanel(id="status")
        yield Input(placeholder="Ask a question, or type /help", id="prompt")
        yield Footer()

    async def on_mount(self) -> None:
        self.query_one(Input).focus()
        self.query_one("#main").set_class(self.size.width < NARROW, "-narrow")
        if isinstance(self._resume, Path):
            await self.load_transcript(self._resume)
        elif isinstance(self._resume, Transcript):
            await self.show_transcript(self._resume)
        if self.runtime is None:
            await self.view.show_message(
                f"loading models: draft {self.settings.draft}, target {self.settings.target}…", "info loading"
            )
            self.run_worker(self._open_runtime(), group="load", exit_on_error=False)
        else:
            await self._models_ready()
        self.refresh_status()

    async def on_unmount(self) -> None:
        if self._owns_runtime and self.runtime is not None:
            await self.runtime.aclose()

    async def _open_runtime(self) -> None:
        try:
            runtime = await open_runtime(self.settings)
        except Exception as exc:  # any failure is shown; the app stays open
            self.load_error = str(exc) or type(exc).__name__
            self.notify(self.load_error, title="could not load the models", severity="error", timeout=30)
            self.view.loaded(f"could not load the models: {self.load_error}", failed=True)
            self.refresh_status()
            return
        self.runtime = runtime
        await self._models_ready()
        self.view.loaded(f"models ready: draft {self.settings.draft}, target {self.settings.target}")

    async def _models_ready(self) -> None:
        engine = self.engine
        assert engine is not None and self.runtime is not None
        if engine.reward is None:  # a runtime opened without one (target-only, draft-only)
            with contextlib.suppress(ConfigError):
                engine.reward = make_reward(
                    self.knobs.reward, draft=engine.draft, target=engine.target, settings=self.settings
                )
        models = {k: v for k, v in self.runtime.describe().items() if k in ("backend", "draft", "target")}
        if not self.transcript.records[0].get("models"):
            self.transcript.records[0]["models"] = models
        knobs, self.controls.pending = self.controls.pending or self.knobs, None
        try:
            await self.change(knobs, record=False)
        except ConfigError as exc:
            self.notify(f"settings not applied: {exc}", severity="warning")
        self.refresh_status()

    async def load_transcript(self, path: Path) -> None:
        try:
            transcript = Transcript.load(path)
        except ConfigError as exc:
            self.notify(str(exc), title="cannot load the transcript", severity="error", timeout=15)
            return
        await self.slash.show(transcript)

    async def show_transcript(self, transcript: Transcript) -> None:
        await self.slash.show(transcript)

    def refresh_status(self) -> None:
        if not self.query(StatusPanel):
            return
        rows, state, subtitle = status_rows(self)
        self.query_one(StatusPanel).show(rows, self.done_cost.plus(self.live_cost), state)
        self.sub_title = subtitle

    # -- changing settings ------------------------------------------------------------

    async def change(self, new: Knobs, *, record: bool = True) -> None:
        """Put `new` in force from the next step; ConfigError (nothing changed) if it cannot be."""
        await self.controls.change(new, record=record)

    async def on_changes_applied(self, message: ChangesApplied) -> None:
        await self.controls.applied(message)

    async def action_delta(self, direction: int) -> None:
        if self.engine is None:
            self.notify("the models are still loading; try again in a moment", severity="warning")
        elif not uses_delta(self.knobs):
            self.notify(
                f"the {self.knobs.weighting} weighting has no δ; try /weighting binary", severity="warning"
            )
        else:
            await self.try_change(nudge_delta(self.knobs, self.reward, direction))

    async def action_quit(self) -> None:
        """Quit; a chat with unsaved turns asks once (press again to quit, or /save)."""
        if self.transcript.unsaved and not self._quit_asked:
            self._quit_asked = True
            self.set_timer(5, lambda: setattr(self, "_quit_asked", False))
            self.notify("this chat is not saved: /save it, or press ctrl+q again to quit", severity="warning")
            return
        self.exit()

    async def try_change(self, knobs: Knobs) -> None:
        try:
            await self.change(knobs)
        except ConfigError as exc:
            self.notify(str(exc), severity="error")

    def palette_entries(self) -> Iterable[PaletteEntry]:
        return self.slash.palette_entries()

    # -- asking -----------------------------------------------------------------------

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if text.startswith("/"):
            if await self.slash.run(text):
                event.input.value = ""
            return
        if self.engine is None:
            why = f"the models could not be loaded: {self.load_error}" if self.load_error else None
            self.notify(why or "the models are still loading; your question is kept", severity="warning")
            return
        if self.generating:
            self.notify("still answering; press Esc to stop it (your question is kept)", severity="warning")
            return
        event.input.value = ""
        await self.ask(text)

    async def ask(self, question: str) -> None:
        await self.answering.ask(question)

    async def on_engine_event(self, message: EngineEvent) -> None:
        await self.answering.show(message)

    async def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        await self.answering.worker_changed(event)

    def on_collapsible_toggled(self, event: Collapsible.Toggled) -> None:
        """After opening or closing a rejected draft, typing goes to the input again."""
        self.query_one(Input).focus()

    def action_stop(self) -> None:
        self.answering.stop()

    def on_resize(self, event: events.Resize) -> None:
        """Below 100 columns the side panel hides (F4 shows it); the header keeps the essentials."""
        self.query_one("#main").set_class(event.size.width < NARROW, "-narrow")

    def action_toggle_panel(self) -> None:
        narrow = self.query_one("#main").has_class("-narrow")
        self.query_one(StatusPanel).toggle_class("-shown" if narrow else "-hidden")

    async def action_help(self) -> None:
        await self.view.show_help(help_text())
