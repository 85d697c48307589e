"""A chat's transcript as a whole: /new starts another, /load goes on with a saved one, /save and
/export write it, /keep and /retry act on its last turn.

A transcript shown (`show`: /load, /history, `--resume`) brings back its costs and the settings
it was written with, and a warning if it was written with other models than those loaded; shown
before the models are loaded, its settings and that check wait for them (`opened`, which puts
the chat's own settings in force otherwise). The chat shown before it is kept in the history
first, with what it did since its last turn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from rsdchat.chat.changes import Changes
from rsdchat.chat.choice import Choice
from rsdchat.chat.events import Cleared, Listener, Replayed, Severity, StateChanged, TurnKept
from rsdchat.chat.models import loaded_models, models_in_force, written_with
from rsdchat.chat.saving import ChatFiles
from rsdchat.chat.transcript import Transcript
from rsdchat.core.errors import ConfigError
from rsdchat.core.protocols import StepGenerator
from rsdchat.core.trace import Acceptance, Ledger
from rsdchat.runtime import Runtime
from rsdchat.settings import Settings


class _Chat(Protocol):
    """The parts of a chat session its transcript operations use."""

    choice: Choice
    transcript: Transcript
    turn: int
    spent: Ledger
    acceptance: Acceptance
    runtime: Runtime | None
    policy_error: str | None
    files: ChatFiles
    listener: Listener

    @property
    def answering(self) -> bool: ...
    @property
    def settings(self) -> Settings: ...
    def models(self) -> tuple[StepGenerator | None, StepGenerator | None]: ...
    def why_not_ask(self) -> str | None: ...
    async def change(self, new: Choice, *, record: bool = True) -> None: ...
    def notify(self, text: str, severity: Severity = "information", title: str = "") -> None: ...


class TranscriptOps:
    """The transcript operations of one chat: which transcript it shows, and what is done to it."""

    def __init__(self, chat: _Chat, changes: Changes) -> None:
        self.chat = chat
        self.changes = changes  # closed when another transcript is shown
        self._pending: Choice | None = None  # from a transcript shown before the models were loaded
        self._check_models_at_open = False  # ditto: compare its models once they are loaded

    def _idle(self, what: str) -> None:
        if self.chat.answering:
            raise ConfigError(f"stop the answer first (Esc), then {what}")

    def retry_turn(self) -> tuple[str, int]:
        """The question /retry asks again and its turn; ConfigError if there is none or it cannot be asked."""
        self._idle("retry")
        last = self.chat.transcript.last("user")
        if last is None:
            raise ConfigError("no question to ask again yet")
        why_not = self.chat.why_not_ask()
        if why_not:
            raise ConfigError(why_not)
        return str(last["content"]), int(last["turn"])

    def keep(self) -> int:
        """Keep the last (stopped) answer in the models' context; the turn it was."""
        chat = self.chat
        self._idle("keep what it wrote")
        turn = chat.transcript.keep_last()
        chat.files.autosave.write(chat.transcript)
        chat.listener(TurnKept(turn))
        chat.notify(f"turn #{turn} is kept: the next question sees what it wrote", title="kept")
        return turn

    def keep_in_history(self) -> None:
        """Before another chat is shown: what this one did since its last turn (a ⚙ line) is saved too."""
        self.chat.files.keep_in_history(self.chat.transcript)

    def _reset(self) -> None:
        chat = self.chat
        chat.turn = 0
        chat.spent, chat.acceptance = Ledger(), Acceptance()
        self.changes.close()

    def new(self) -> None:
        chat = self.chat
        self._idle("start a new chat")
        models = models_in_force(chat.transcript)  # as /model left them
        self.keep_in_history()
        chat.transcript = Transcript.start(chat.choice, models)
        chat.files.autosave.reset(chat.transcript)
        self._reset()
        chat.listener(Cleared())
        chat.notify("new chat")
        chat.listener(StateChanged())

    def save(self, path: Path | None = None) -> Path:
        """/save [PATH]: write the transcript; a file already there only if it is this chat's own."""
        chat = self.chat
        path = chat.files.save(chat.transcript, path)
        chat.notify(f"saved {len(chat.transcript.records)} records to {path}", title="transcript saved")
        return path

    def export(self, path: Path | None = None) -> Path:
        """/export [PATH.md]: the transcript as Markdown; over a file only if this session exported it."""
        chat = self.chat
        path = chat.files.export(chat.transcript, path)
        chat.notify(f"exported to {path}", title="Markdown export")
        return path

    async def load(self, path: Path) -> None:
        self._idle("load a transcript")
        await self.show(Transcript.load(path))

    async def show(self, transcript: Transcript) -> None:
        """Continue a loaded transcript: draw it, count its costs, put its settings back in force."""
        chat = self.chat
        self.keep_in_history()
        chat.transcript = transcript
        chat.files.autosave.reset(transcript)
        self._reset()
        chat.turn = transcript.turns
        chat.spent, chat.acceptance = transcript.totals()
        chat.listener(Replayed(list(transcript.records)))
        if chat.runtime is not None:
            self.check_models()
        self._check_models_at_open = chat.runtime is None
        saved = transcript.chosen()
        if saved is not None:
            try:
                chosen = Choice.from_dict(saved, chat.settings)
                if chat.runtime is None:
                    self._pending = chosen
                else:
                    await chat.change(chosen, record=False)
            except ConfigError as exc:
                chat.notify(f"its settings were not restored: {exc}", "warning", "transcript loaded")
        chat.notify(
            f"{transcript.path or 'transcript'}: {transcript.turns} question(s)", title="transcript loaded"
        )
        if transcript.cut is not None:
            chat.notify(
                f"{transcript.path}:{transcript.cut}: the last line was cut short (a crash?) and is left out",
                "warning",
                "transcript loaded",
            )
        chat.listener(StateChanged())

    async def opened(self, runtime: Runtime) -> None:
        """The models are loaded: a transcript shown before is checked against them, and the settings
        it was written with are put in force, else the chat's own; says why if neither can be."""
        chat = self.chat
        header = chat.transcript.records[0]
        if self._check_models_at_open:
            self.check_models()
        if not header.get("models"):
            header["models"] = loaded_models(runtime)
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                await chat.change(pending, record=False)
                return
            except ConfigError as exc:
                chat.notify(f"its settings were not restored: {exc}", "warning", "transcript loaded")
        try:
            await chat.change(chat.choice, record=False)
        except ConfigError as exc:
            chat.policy_error = str(exc)
            chat.notify(f"{exc}; change it to ask (see /help)", "error", "the settings cannot be used")

    def check_models(self) -> None:
        """Warn when the transcript was written with other models than the ones loaded."""
        self._check_models_at_open = False
        chat = self.chat
        draft, target = chat.models()
        loaded = {role: model.info.name for role, model in (("draft", draft), ("target", target)) if model}
        differ = written_with(chat.transcript, loaded)
        if differ:
            chat.notify("written with " + ", ".join(differ), "warning", "other models")
