"""Saved chats: every chat is written, after each finished turn, to one JSONL transcript here.

They live in `platformdirs.user_data_dir("rsdchat")/chats/` (on Linux
`~/.local/share/rsdchat/chats/`), or under `$RSDCHAT_DATA_DIR/chats/` when that variable
is set. `scan_chats()` lists them newest first for the chat list (/history), and
`continue_chat()` is what `rsdchat --continue` reopens: the newest that can be read (a chat
that cannot, a damaged or hand-edited file, is skipped and said, never a crash).

The list searches every question and answer (`matches`), renames a chat (`rename_chat`: a
`title` in its session line) and deletes one (`trash_chat`: moved to `chats/trash/`, never
removed, so it can be moved back).

A chat file is written by one chat at a time (`Autosave`: a lock beside it, and a check that
the file is as this chat last wrote it); any other chat showing it goes on in a new file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import platformdirs

from rsdchat.chat.transcript import Seen, Transcript, file_seen
from rsdchat.core.errors import ConfigError
from rsdchat.files import Lock, Record, same_file

DATA_DIR_ENV = "RSDCHAT_DATA_DIR"
TRASH = "trash"  # the folder, inside the chats' own, where a deleted chat goes
SNIPPET = 90  # characters of a search snippet


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
    title: str = ""  # the name it was given (/history's rename), else ''
    text: str = field(default="", repr=False)  # every question and answer, on one line: what search reads

    @property
    def name(self) -> str:
        """What the list shows: its title, else its first question."""
        return self.title or self.question


def _starts_like_a_chat(path: Path) -> bool:
    """Whether `path` begins with a transcript's session line (else it is not a chat: left out quietly)."""
    try:
        with path.open("rb") as lines:
            first = json.loads(lines.readline())
    except (OSError, ValueError):  # ValueError: not UTF-8, not JSON
        return False
    return isinstance(first, dict) and first.get("type") == "session"


def _candidates(directory: Path) -> list[tuple[float, Path]]:
    """The .jsonl files that begin like a chat, newest first (by when they were last written)."""
    found = []
    try:
        paths = [p for p in directory.glob("*.jsonl") if p.is_file()]
    except OSError:
        return []
    for path in paths:
        try:
            modified = path.stat().st_mtime
        except OSError:
            continue
        if _starts_like_a_chat(path):
            found.append((modified, path))
    return sorted(found, key=lambda chat: (chat[0], chat[1].name), reverse=True)


def one_line(text: str) -> str:
    return " ".join(text.split())


def title_of(header: Record) -> str:
    """The title a session line holds ('' for none, or one that is not text)."""
    title = header.get("title")
    return one_line(title) if isinstance(title, str) else ""


def _summary(transcript: Transcript, modified: float) -> SavedChat:
    assert transcript.path is not None
    records = transcript.records
    questions = [str(r["content"]) for r in records if r["type"] == "user"]
    said = one_line(" ".join(str(r["content"]) for r in records if r["type"] in ("user", "answer")))
    first = one_line(questions[0]) if questions else ""
    when = datetime.fromtimestamp(modified)
    return SavedChat(transcript.path, when, first, len(questions), title_of(records[0]), said)


def scan_chats(directory: Path | None = None) -> tuple[list[SavedChat], list[str]]:
    """The saved chats, newest first, and one line for each chat that cannot be read (left out).

    Files that are not transcripts at all (another tool's JSONL) are left out without a word.
    """
    directory = directory if directory is not None else chats_dir()
    chats, skipped = [], []
    for modified, path in _candidates(directory):
        try:
            chats.append(_summary(Transcript.load(path), modified))
        except ConfigError as exc:
            skipped.append(str(exc))
    return chats, skipped


def saved_chats(directory: Path | None = None) -> list[SavedChat]:
    """The saved chats that can be read, newest first."""
    return scan_chats(directory)[0]


def newest_chat(directory: Path | None = None) -> Path | None:
    """The most recently written saved chat that can be read (for `rsdchat --continue`), if any."""
    directory = directory if directory is not None else chats_dir()
    try:
        return continue_chat(directory)[0].path
    except ConfigError:
        return None


def skipped_note(skipped: list[str]) -> str:
    """'2 saved chats cannot be read: FILE:7: field 'cost' is not an object (and 1 more)'."""
    more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
    return f"{len(skipped)} saved chat{'s' * (len(skipped) != 1)} cannot be read: {skipped[0]}{more}"


def continue_chat(directory: Path | None = None) -> tuple[Transcript, list[str]]:
    """The newest saved chat that can be read, and why each newer one cannot be (skipped).

    A ConfigError says there is none, and where they are kept.
    """
    directory = directory if directory is not None else chats_dir()
    skipped: list[str] = []
    for _, path in _candidates(directory):
        try:
            return Transcript.load(path), skipped
        except ConfigError as exc:
            skipped.append(str(exc))
    if skipped:
        raise ConfigError(f"no saved chat to continue in {directory}: {skipped_note(skipped)}")
    raise ConfigError(f"no saved chat to continue in {directory}")


def chat_to_continue(directory: Path | None = None) -> Path:
    """The path of `continue_chat()`'s chat (a ConfigError says there is none and where they are kept)."""
    path = continue_chat(directory)[0].path
    assert path is not None
    return path


# -- search, rename, delete (the chat list's keys) ----------------------------------------


def snippet(text: str, at: int, width: int = SNIPPET) -> str:
    """About `width` characters of `text` around position `at`, cut between words ('…' where cut)."""
    start = max(0, at - width // 3)
    if start:
        start = text.find(" ", start, at) + 1 or start
    end = start + width
    if end < len(text):
        space = text.rfind(" ", at, end)
        end = space if space > at else end
    return ("…" if start else "") + text[start:end].strip() + ("…" if end < len(text) else "")


def matches(chat: SavedChat, query: str) -> str | None:
    """Whether every word of `query` is in the chat's questions, answers or title (in any case).

    None: it is not. Else a snippet of the text around the first word found there ('' when
    the words are only in the title, or there are none).
    """
    hits = []
    for word in query.split():
        pattern = re.compile(re.escape(word), re.IGNORECASE)
        hit = pattern.search(chat.text)
        if hit is None and pattern.search(chat.title) is None:
            return None
        if hit is not None:
            hits.append(hit.start())
    return snippet(chat.text, min(hits)) if hits else ""


def set_title(header: Record, title: str) -> None:
    """Name a chat in its session line; '' takes the name away (the list shows its first question)."""
    title = one_line(title)
    if title:
        header["title"] = title
    else:
        header.pop("title", None)


@contextlib.contextmanager
def _held(path: Path) -> Iterator[None]:
    """A saved chat's lock, held while it is renamed or moved (ConfigError if it is gone, or in use)."""
    if not path.is_file():
        raise ConfigError(f"{path} is gone (moved or deleted by another program)")
    lock = Lock.take(path)
    if lock is None:
        raise ConfigError(f"{path.name} is open in another rsdchat: close it there first")
    try:
        yield
    finally:
        lock.release()


def rename_chat(path: Path, title: str) -> None:
    """Give the saved chat at `path` a title ('' takes it away), written whole into its session line.

    Its date stays (the list keeps its place). ConfigError (one line, nothing changed) when
    it cannot be: the file is gone or in use, or its folder cannot be written.
    """
    with _held(path):
        transcript = Transcript.load(path)
        set_title(transcript.records[0], title)
        transcript.write(
            path,
            replace=lambda there: file_seen(there) == transcript.seen,
            what=", and was changed by another program",
        )
        if transcript.seen is not None:
            with contextlib.suppress(OSError):
                os.utime(path, ns=(transcript.seen[2], transcript.seen[2]))


def _free_name(path: Path) -> Path:
    """`path`, or NAME-2.jsonl, NAME-3.jsonl… if something is there already."""
    number, free = 1, path
    while os.path.lexists(free):
        number += 1
        free = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return free


def trash_chat(path: Path) -> Path:
    """Move the saved chat at `path` into the trash folder beside it (`TRASH`); where it went.

    Nothing is removed: moving it back brings it back to the list. ConfigError (one line,
    nothing changed) when it cannot be moved: it is gone or in use, or the folder is read-only.
    """
    trash = path.parent / TRASH
    with _held(path):
        try:
            trash.mkdir(exist_ok=True)
            moved = _free_name(trash / path.name)
            os.rename(path, moved)
        except OSError as exc:
            raise ConfigError(f"cannot move {path} to {trash}: {exc.strerror or exc}") from None
    return moved


class Autosave:
    """Where one chat is kept in the history, and whether everything it said is written there.

    A chat's file is written by one rsdchat at a time: the chat that writes it holds its lock
    (`rsdchat.files.Lock`) from when it is shown until another chat is or the app closes. A
    chat shown while another rsdchat holds its file, or whose file was changed by something
    else since this chat last read or wrote it, goes on in a new file (a fork), and says so:
    no turn written by anyone is ever written over.
    """

    def __init__(self, directory: Path, tell: Callable[[str], None] | None = None) -> None:
        self.directory = directory
        self.path: Path | None = None  # None until the chat's first turn is written
        self.written = 0  # records of the transcript in the file
        self.error: str | None = None  # why the last write failed
        self._tell = tell or (lambda text: None)  # a fork, said to the user
        self._lock: Lock | None = None  # held on `path` while this chat writes it
        self._seen: Seen | None = None  # `path` as this chat last read or wrote it

    def inside(self, path: Path) -> bool:
        """Whether `path` is in the history's folder."""
        try:
            return path.expanduser().resolve().parent == self.directory.expanduser().resolve()
        except OSError:
            return False

    def holds(self, path: Path) -> bool:
        """Whether `path` is the history file this chat writes."""
        return self.path is not None and self._lock is not None and same_file(path, self.path)

    def reset(self, transcript: Transcript) -> None:
        """A chat shown now: one from the history goes on in its own file, any other gets a new one."""
        self.close()
        self.error = None
        self.path, self.written, self._seen = None, 0, None
        path = transcript.path
        if path is None or not self.inside(path):
            return
        lock = Lock.take(path)
        if lock is None:
            self._fork("this chat is open in another rsdchat")
            return
        self._lock, self.path = lock, path.expanduser()
        self.written, self._seen = len(transcript.records), transcript.seen

    def _new_file(self) -> None:
        """A new file for this chat in the history, locked (a new name: no one else has it)."""
        self.close()
        with contextlib.suppress(OSError):  # the lock goes beside it; a folder we cannot make fails later
            self.directory.mkdir(parents=True, exist_ok=True)
        self.path, self.written, self._seen = new_chat_path(self.directory), 0, None
        self._lock = Lock.take(self.path)

    def _fork(self, why: str) -> None:
        """Go on in a new file of the history (the whole chat is written there at the next write)."""
        self._new_file()
        self._tell(f"{why}; your turns here are saved as a new chat {self.path}")

    def _changed(self) -> bool:
        """Whether the file is not as this chat last read or wrote it (another program wrote it)."""
        assert self.path is not None
        now = file_seen(self.path)
        return now != self._seen and not (now is None and self._seen is None)

    def pending(self, transcript: Transcript) -> bool:
        """Records not written yet in a chat that has questions."""
        return transcript.turns > 0 and len(transcript.records) > self.written

    def write(self, transcript: Transcript) -> str | None:
        """Write the chat (atomically); the error, the first time writing it fails."""
        if not transcript.turns:
            return None
        if self.path is None:
            self._new_file()
        elif self._changed():
            self._fork(f"{self.path} was changed by another program")
        path = self.path
        assert path is not None
        try:
            transcript.write(path, replace=lambda there: file_seen(there) == self._seen)
        except ConfigError as exc:
            first, self.error = self.error is None, str(exc)
            return self.error if first else None
        self.written, self._seen, self.error = len(transcript.records), file_seen(path), None
        return None

    def close(self) -> None:
        """Let go of the file's lock (another chat is shown, or the app closes)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
