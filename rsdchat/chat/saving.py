"""Where a chat's files go: its autosave in the history, /save and /export.

Each writes only what is the chat's own: `/save` replaces a file only if it is where this
chat was saved to or loaded from (a history file only while this chat holds its lock),
`/export` only a Markdown file this session exported. Files are written whole
(rsdchat.files); a refusal is a ConfigError of one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from rsdchat.chat.history import Autosave, chats_dir
from rsdchat.chat.transcript import Transcript, default_path, write_file
from rsdchat.core.errors import ConfigError
from rsdchat.files import same_file


class ChatFiles:
    """A chat's place in the history (`autosave`) and the files /save and /export wrote."""

    def __init__(self, forked: Callable[[str], None], directory: Path | None = None) -> None:
        self.autosave = Autosave(directory or chats_dir(), forked)
        self._exported: set[Path] = set()  # the files /export wrote: only those it writes over

    def keep_in_history(self, transcript: Transcript) -> None:
        """What the chat did since its last autosave (a ⚙ line) is saved too."""
        if self.autosave.pending(transcript):
            self.autosave.write(transcript)

    def own_file(self, transcript: Transcript, path: Path) -> bool:
        """Whether `path` is the chat's own saved file (where it was saved to or loaded from).

        A chat file of the history counts only while this chat writes it (holds its lock).
        """
        own = transcript.path
        if own is None or not same_file(path, own):
            return False
        return not self.autosave.inside(own) or self.autosave.holds(own)

    def save(self, transcript: Transcript, path: Path | None = None) -> Path:
        """/save [PATH]: write the transcript; a file already there only if it is the chat's own."""
        path = (path or transcript.path or default_path(".jsonl")).expanduser()
        autosave = self.autosave
        if autosave.holds(path):  # the history file this chat writes: written the same way
            autosave.write(transcript)
            if autosave.error:
                raise ConfigError(autosave.error)
            assert autosave.path is not None
            transcript.path, transcript.saved = autosave.path, len(transcript.records)
            return autosave.path

        def ours(there: Path) -> bool:
            return self.own_file(transcript, there)

        if ours(path) and path.is_symlink():  # its own file, reached by a link
            path = Path(os.path.realpath(path))
        return transcript.save(path, replace=ours)

    def export(self, transcript: Transcript, path: Path | None = None) -> Path:
        """/export [PATH.md]: the transcript as Markdown; over a file only if this session exported it."""
        saved = transcript.path
        if saved is not None and self.autosave.inside(saved):  # not beside the history's files
            saved = None
        path = (path or (saved.with_suffix(".md") if saved else default_path(".md"))).expanduser()
        exported = self._exported

        def ours(there: Path) -> bool:
            return any(same_file(there, before) for before in exported)

        path = write_file(
            path, transcript.to_markdown(), replace=ours, what=", and this chat did not export it"
        )
        exported.add(path.absolute())
        return path
