"""Saved chats: every chat is written, after each finished turn, to one JSONL transcript here.

They live in `platformdirs.user_data_dir("rsdchat")/chats/` (on Linux
`~/.local/share/rsdchat/chats/`), or under `$RSDCHAT_DATA_DIR/chats/` when that variable
is set. `saved_chats()` lists them newest first for the chat list (/history), and
`newest_chat()` is what `rsdchat --continue` reopens.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import platformdirs

from rsdchat.chat.transcript import Transcript
from rsdchat.errors import ConfigError

DATA_DIR_ENV = "RSDCHAT_DATA_DIR"


def data_dir() -> Path:
    """$RSDCHAT_DATA_DIR, else the user's data directory for rsdchat."""
    given = os.environ.get(DATA_DIR_ENV)
    return Path(given).expanduser() if given else Path(platformdirs.user_data_dir("rsdchat"))


def chats_dir() -> Path:
    return data_dir() / "chats"


def new_chat_path(directory: Path) -> Path:
    """A fresh file name for a new chat: DATE-TIME-RANDOM.jsonl."""
    return directory / f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}.jsonl"


@dataclass(frozen=True)
class SavedChat:
    """One saved chat, as the chat list shows it."""

    path: Path
    modified: datetime  # last written: the end of its last turn
    question: str  # its first question
    questions: int


def _summary(path: Path) -> SavedChat | None:
    """What the list shows of `path` (None: not an rsdchat transcript)."""
    try:
        modified = datetime.fromtimestamp(path.stat().st_mtime)
        question, count = "", 0
        with path.open(encoding="utf-8") as lines:
            first = json.loads(next(lines, "null"))
            if not isinstance(first, dict) or first.get("type") != "session":
                return None
            for line in lines:
                if '"type": "user"' not in line[:32]:  # how user records are written: cheap to skip
                    continue
                record = json.loads(line)
                count += 1
                question = question or str(record.get("content", ""))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return SavedChat(path, modified, " ".join(question.split()), count)


def saved_chats(directory: Path | None = None) -> list[SavedChat]:
    """The saved chats, newest first (files that are not transcripts are left out)."""
    directory = directory if directory is not None else chats_dir()
    try:
        paths = [p for p in directory.glob("*.jsonl") if p.is_file()]
    except OSError:
        return []
    found = [chat for chat in map(_summary, paths) if chat is not None]
    return sorted(found, key=lambda chat: (chat.modified, chat.path.name), reverse=True)


def newest_chat(directory: Path | None = None) -> Path | None:
    """The most recently written saved chat (for `rsdchat --continue`), None if there is none."""
    chats = saved_chats(directory)
    return chats[0].path if chats else None


def chat_to_continue(directory: Path | None = None) -> Path:
    """`newest_chat()`, or a ConfigError saying there is none and where they are kept."""
    directory = directory if directory is not None else chats_dir()
    newest = newest_chat(directory)
    if newest is None:
        raise ConfigError(f"no saved chat to continue in {directory}")
    return newest


class Autosave:
    """Where one chat is kept in the history, and whether everything it said is written there."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None  # None until the chat's first turn is written
        self.written = 0  # records of the transcript in the file
        self.error: str | None = None  # why the last write failed

    def reset(self, transcript: Transcript) -> None:
        """A chat shown now: one from the history goes on in its own file, any other gets a new one."""
        path = transcript.path
        inside = (
            path is not None and path.expanduser().resolve().parent == self.directory.expanduser().resolve()
        )
        self.path = path if inside else None
        self.written = len(transcript.records) if inside else 0
        self.error = None

    def pending(self, transcript: Transcript) -> bool:
        """Records not written yet in a chat that has questions."""
        return transcript.turns > 0 and len(transcript.records) > self.written

    def write(self, transcript: Transcript) -> str | None:
        """Write the chat (atomically); the error, the first time writing it fails."""
        if not transcript.turns:
            return None
        path = self.path or new_chat_path(self.directory)
        try:
            transcript.write(path)
        except ConfigError as exc:
            first, self.error = self.error is None, str(exc)
            return self.error if first else None
        self.path, self.written, self.error = path, len(transcript.records), None
        return None
