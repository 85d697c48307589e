"""The Textual chat app (`rsdchat` with no subcommand).

`run(settings, resume)` opens the app and blocks until the user quits; `RsdChatApp`
takes an already-open `Runtime` (tests inject scripted models this way) or `Settings`
(the models then load in the background while the app is already usable).
"""

from __future__ import annotations

from pathlib import Path

from rsdchat.chat.transcript import Transcript, TranscriptError
from rsdchat.settings import Settings
from rsdchat.tui.app import RsdChatApp

__all__ = ["RsdChatApp", "Transcript", "TranscriptError", "run"]


def run(settings: Settings, resume: Path | None = None) -> None:
    """Run the chat app until the user quits.

    A `resume` file is read before the app starts, so a missing or broken file is a
    `ConfigError` (exit code 2) rather than an empty chat. `rsdchat --continue` passes
    `rsdchat.chat.history.chat_to_continue()`: the newest saved chat, which goes on in its file.
    """
    transcript = Transcript.load(resume) if resume is not None else None
    RsdChatApp(settings, resume=transcript).run()
