"""rsdchat's chat app: watch Reward-Guided Speculative Decoding write each answer, step by step.

The app is a view of a `ChatSession` (rsdchat.chat), which holds the state and runs the
engine: key presses and typed lines become session calls, and the session's events come
back as one Textual message each, drawn by the widgets.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, ClassVar

from rich.cells import cell_len
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.message import Message
from textual.widgets import Collapsible, Footer, Header, Static

from rsdchat.chat.commands import parse_command
from rsdchat.chat.events import ChatEvent, Notice, Replayed, StateChanged
from rsdchat.chat.history import (
    chats_dir,
    continue_chat,
    rename_chat,
    scan_chats,
    set_title,
    skipped_note,
)
from rsdchat.chat.models import parse_model
from rsdchat.chat.session import ChatSession
from rsdchat.chat.transcript import Transcript
from rsdchat.core.errors import ConfigError
from rsdchat.files import clean_temps
from rsdchat.runtime import Runtime
from rsdchat.settings import Settings
from rsdchat.tui.drawing import draw
from rsdchat.tui.palette import ChatCommands, PaletteEntry, palette_entries
from rsdchat.tui.screens.help import HelpScreen
from rsdchat.tui.screens.history import HistoryScreen
from rsdchat.tui.signals import SignalEnd
from rsdchat.tui.styles import CSS
from rsdchat.tui.widgets.prompt import Prompt
from rsdchat.tui.widgets.status import StatusPanel
from rsdchat.tui.widgets.transcript import TranscriptView

NARROW = 100  # columns below which the side panel starts hidden
HEADER_SIDES = 5  # the header's columns besides its title: the icon (4) and the clock's space (1)
PLACEHOLDER = "Ask a question · Enter sends · Shift+Enter or Ctrl+J: new line · /help"


def header_line(title: str, subtitle: str, width: int) -> tuple[str, str]:
    """The header's title and subtitle cut to `width` columns: the title goes first, then the
    subtitle's last ' · ' parts (the least essential: the chat style, then the acceptance)."""
    if not subtitle or cell_len(f"{title} — {subtitle}") <= width:
        return title, subtitle
    parts = subtitle.split(" · ")
    while len(parts) > 1 and cell_len(" · ".join(parts)) > width:
        parts.pop()
    return "", " · ".join(parts)


class SessionEvent(Message):
    """One event of the chat session, delivered in order."""

    def __init__(self, event: ChatEvent) -> None:
        super().__init__()
        self.event = event


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
        Binding("f6", "toggle_rejected", "Drafts"),
        Binding("f1", "help", "Help"),
    ]

    def __init__(
        self,
        source: Runtime | Settings,
        *,
        resume: Path | Transcript | None = None,
        notes: Iterable[str] = (),
    ) -> None:
        """`notes`: said when the app opens (the saved chats `--continue` skipped)."""
        super().__init__()
        settings = source.settings if isinstance(source, Runtime) else source
        runtime = source if isinstance(source, Runtime) else None
        self.session = ChatSession(settings, runtime=runtime, listener=self._deliver)
        self._resume = resume
        self._notes = list(notes)
        self._quit_asked = False
        self._signals = SignalEnd(self, self.session)  # SIGTERM and SIGHUP end it as quitting does

    @property
    def prompt(self) -> Prompt:
        return self.query_one("#prompt", Prompt)

    def _deliver(self, event: ChatEvent) -> None:
        self.post_message(SessionEvent(event))

    @property
    def view(self) -> TranscriptView:
        return self.query_one(TranscriptView)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            yield TranscriptView()
            yield StatusPanel(id="status")
        yield Prompt(PLACEHOLDER, id="prompt")
        yield Footer()

    async def on_mount(self) -> None:
        self._signals.catch()
        self.prompt.focus()
        self.query_one("#main").set_class(self.size.width < NARROW, "-narrow")
        self.refresh_status()
        for note in self._notes:
            self.notify(note, title="rsdchat --continue", severity="warning", timeout=15, markup=False)
        resume = self._resume
        if isinstance(resume, Path):
            try:
                resume = Transcript.load(resume)
            except ConfigError as exc:  # shown; the chat starts empty
                self.notify(str(exc), title="could not resume", severity="error", timeout=15, markup=False)
                resume = None
        if resume is not None:
            await self.session.show(resume)
        else:
            await self.view.welcome()
        self.run_worker(self.session.open(), group="load", exit_on_error=False)

    async def on_unmount(self) -> None:
        self._signals.release()
        await self.session.aclose()

    # -- drawing the session's events -------------------------------------------------

    async def on_session_event(self, message: SessionEvent) -> None:
        if self._signals.ending:
            return
        event, view = message.event, self.view
        if isinstance(event, Notice):
            timeout = 15 if event.severity in ("error", "warning") else None
            self.notify(event.text, title=event.title, severity=event.severity, timeout=timeout, markup=False)
        elif isinstance(event, StateChanged):
            self.refresh_status()
        else:
            await draw(view, event, self.session.turn)  # in the transcript (rsdchat.tui.drawing)
            if isinstance(event, Replayed):
                self.prompt.remember(str(r["content"]) for r in event.records if r["type"] == "user")

    def refresh_status(self) -> None:
        if not self.query(StatusPanel):
            return
        status = self.session.status()
        self.query_one(StatusPanel).show(status)
        self.sub_title = status.subtitle
        self._fit_header()
        # on the input's edge, so it shows when the side panel is hidden and the header is cut short
        self.prompt.border_title = "" if status.state == "ready" else status.state

    # -- input ------------------------------------------------------------------------

    async def on_prompt_submitted(self, event: Prompt.Submitted) -> None:
        """Enter: the whole text (every line of it) is asked, or run as a /command."""
        text = event.value.strip()
        if not text:
            return
        if text.startswith("/"):
            if await self._command(text):
                event.prompt.sent()
            return
        why_not = self.session.why_not_ask()
        if why_not:  # the question stays in the input
            self.notify(why_not, severity="warning", markup=False)
            return
        event.prompt.sent()
        self._run(self.session.ask(text))

    def _run(self, work: Coroutine[Any, Any, object]) -> None:
        """Run `work` in the background; its ConfigError becomes a notification."""

        async def run() -> None:
            try:
                await work
            except ConfigError as exc:
                self.notify(str(exc), severity="error", markup=False)

        self.run_worker(run(), group="session", exit_on_error=False)

    async def _command(self, line: str) -> bool:
        """Run a /command; True if it worked (the input is then cleared)."""
        try:
            name, rest = parse_command(line)
            run = getattr(self, f"command_{name}", None)  # the app's own (COMMANDS says which)
            await (run(rest) if run is not None else self.session.command(line))
        except ConfigError as exc:
            self.notify(str(exc), title=line.split()[0], severity="error", timeout=8, markup=False)
            return False
        return True

    def on_collapsible_toggled(self, event: Collapsible.Toggled) -> None:
        """After opening or closing a rejected draft, typing goes to the input again."""
        self.prompt.focus()

    def on_key(self, event: events.Key) -> None:
        """A printable key pressed while the focus is elsewhere (the transcript) goes into the input."""
        prompt = self.prompt
        if len(self.screen_stack) > 1 or self.focused is prompt or not event.is_printable:
            return
        if event.character is None:
            return
        event.stop()
        event.prevent_default()
        prompt.focus()
        prompt.insert(event.character)

    async def on_event(self, event: events.Event) -> None:
        """A paste while the focus is elsewhere (the transcript) goes into the input too, whole
        (Textual hands a paste to the focused widget only)."""
        if isinstance(event, events.Paste) and not event.is_forwarded and len(self.screen_stack) == 1:
            for prompt in self.query("#prompt").results(Prompt):
                if self.focused is not prompt:
                    prompt.focus()
                    prompt.post_message(events.Paste(event.text))
                    return
        await super().on_event(event)

    async def command_help(self, rest: str) -> None:
        await self.action_help()

    async def command_quit(self, rest: str) -> None:
        self.exit()

    async def command_copy(self, rest: str) -> None:
        self.copy_answer()

    async def command_history(self, rest: str) -> None:
        await self.open_history()

    async def command_retry(self, rest: str) -> None:
        """An answer: written in the background, like a typed question (the session's would wait)."""
        question, turn = self.session.retry_turn()
        self._run(self.session.ask(question, retry_of=turn))

    async def command_model(self, rest: str) -> None:
        """Loading a model takes a while: it runs in the background, as an answer does, and its
        loading line shows meanwhile (a bad command, or `/model` alone, is answered at once)."""
        if parse_model(rest) is None:
            await self.session.command_model(rest)
        else:
            self._run(self.session.command_model(rest))

    def copy_answer(self) -> None:
        """/copy: the last answer's text, to the system clipboard (through the terminal: OSC 52)."""
        text = self.session.last_answer()
        if text is None:
            raise ConfigError("no answer to copy yet")
        self.copy_to_clipboard(text)
        self.notify(
            f"{len(text)} characters (if nothing arrives, the terminal does not let apps set the clipboard)",
            title="answer copied",
            markup=False,
        )

    async def open_history(self) -> None:
        """/history: the saved chats, newest first; the one chosen is reopened."""
        session = self.session
        if session.answering:
            raise ConfigError("stop the answer first (Esc), then open the history")
        chats, skipped = scan_chats(session.autosave.directory)
        if skipped:
            self.notify(skipped_note(skipped), title="/history", severity="warning", timeout=15, markup=False)
        if not chats:
            raise ConfigError(f"no saved chats yet (each chat is saved in {session.autosave.directory})")

        def reopen(path: Path | None) -> None:
            if path is not None and path != session.autosave.path:
                self._run(session.load(path))

        await self.push_screen(HistoryScreen(chats, session.autosave.path, self.name_chat), reopen)

    def name_chat(self, path: Path, title: str) -> None:
        """Give a saved chat a title; the chat open now gets it in its own transcript (the next
        autosave writes that whole), and is written now."""
        session = self.session
        if path != session.autosave.path:
            rename_chat(path, title)
            return
        set_title(session.transcript.records[0], title)
        session.autosave.write(session.transcript)
        if session.autosave.error:
            raise ConfigError(f"{session.autosave.error} (the title is kept: it is saved with the next turn)")

    # -- actions ----------------------------------------------------------------------

    def action_stop(self) -> None:
        self.session.stop()

    def action_toggle_rejected(self) -> None:
        """F6: open every rejected draft (or close them all)."""
        if not self.view.toggle_rejected():
            self.prompt.focus()

    async def action_delta(self, direction: int) -> None:
        try:
            await self.session.nudge_delta(direction)
        except ConfigError as exc:
            self.notify(str(exc), severity="warning", markup=False)

    async def action_quit(self) -> None:
        """Quit (every chat is in the history); asks once if it could not be saved there."""
        session = self.session
        if session.autosave.error and session.transcript.unsaved and not self._quit_asked:
            self._quit_asked = True
            self.set_timer(5, lambda: setattr(self, "_quit_asked", False))
            self.notify(
                "this chat could not be saved to the history: /save PATH it, or press ctrl+q again to quit",
                severity="warning",
            )
            return
        self.exit()

    def on_resize(self, event: events.Resize) -> None:
        """Below 100 columns the side panel hides (F4 shows it); the header keeps the essentials."""
        self.query_one("#main").set_class(event.size.width < NARROW, "-narrow")
        self.call_after_refresh(self._fit_header)

    def format_title(self, title: str, sub_title: str) -> Content:
        """The header: 'rsdchat — mode · reward · weighting δ · acceptance · style', cut to fit the
        width from the end (at 80 columns the title goes, the reward stays)."""
        title, sub_title = header_line(title, sub_title, self.size.width - HEADER_SIDES)
        if not title:
            return Content(sub_title)
        return super().format_title(title, sub_title)

    def _fit_header(self) -> None:
        """Draw the header again for the width now (Textual does so only when the text changes)."""
        for header in self.query(Header).results():
            for title in header.query("HeaderTitle").results(Static):
                title.update(header.format_title())

    def action_toggle_panel(self) -> None:
        narrow = self.query_one("#main").has_class("-narrow")
        self.query_one(StatusPanel).toggle_class("-shown" if narrow else "-hidden")

    async def action_help(self) -> None:
        await self.push_screen(HelpScreen())

    # -- the command palette ----------------------------------------------------------

    def prefill(self, text: str) -> None:
        """Put `text` in the input, for the user to finish."""
        prompt = self.prompt
        prompt.value = text
        prompt.focus()

    def palette_command(self, line: str) -> None:
        """Run a /command chosen in the palette, in the background."""
        self.run_worker(self._command(line), group="palette")

    def palette_entries(self) -> Iterable[PaletteEntry]:
        return palette_entries(self)  # rsdchat.tui.palette_entries


def run_chat(settings: Settings, resume: Path | None = None, *, continue_: bool = False) -> int:
    """Run the chat app until the user quits; the exit status (128 + a signal that ended it).

    `resume` is read before the app starts, so a missing or broken file is a ConfigError (one
    line, exit 2); `continue_` reopens the newest saved chat that can be read, and the app says
    which newer ones it skipped and why.
    """
    clean_temps(chats_dir())  # what a killed rsdchat was writing there
    notes = []
    transcript = Transcript.load(resume) if resume is not None else None
    if continue_:
        transcript, skipped = continue_chat()
        if skipped:
            notes.append(f"{skipped_note(skipped)}; continuing {transcript.path}")
    app = RsdChatApp(settings, resume=transcript, notes=notes)
    app.run()
    return app.return_code or 0
