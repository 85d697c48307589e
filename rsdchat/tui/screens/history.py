"""The chat list (/history): the saved chats, newest first, searched by their whole text.

Enter reopens one; `/` (or ↑ from the top) goes to the search, whose words must all be in a
chat's questions, answers or title; `r` renames a chat; `d`, pressed twice, moves it to the
trash beside the chats (never removed); Esc goes back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from rsdchat.chat.history import SavedChat, matches, one_line, rename_chat, trash_chat
from rsdchat.core.errors import ConfigError

Rename = Callable[[Path, str], None]  # gives a saved chat a title ('' none); ConfigError if it cannot
Trash = Callable[[Path], Path]  # moves a saved chat to the trash, and says where; ConfigError if it cannot
KEYS = "Enter reopens · / searches · r renames · d deletes · Esc closes"


def chat_line(chat: SavedChat, current: bool, found: str = "", words: list[str] | None = None) -> Text:
    """'2025-06-01 14:03 · 3 questions · What is 12 times 7?' (its title, if it has one; the chat
    shown now is marked), and under it `found`, the text around a search's first hit."""
    count = f"{chat.questions} question{'s' * (chat.questions != 1)}"
    text = Text.assemble((f"{chat.modified:%Y-%m-%d %H:%M}", "bold"), (f" · {count:<12} · ", "dim"))
    text.append(chat.name or "(no question)")
    if current:
        text.append(" · this chat", "italic")
    text.truncate(200, overflow="ellipsis")
    if found:
        text.append("\n    ")
        text.append(found, "dim")
    if words:
        text.highlight_words(words, "reverse", case_sensitive=False)
    return text


class ChatList(OptionList):
    """The saved chats; r and d act on the highlighted one, ↑ from the top goes to the search."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "screen.rename", "Rename"),
        Binding("d", "screen.delete", "Delete"),
        Binding("slash", "screen.search", "Search", show=False),
    ]

    def action_cursor_up(self) -> None:
        if not self.highlighted:
            self.screen.set_focus(self.screen.query_one("#search"))
        else:
            super().action_cursor_up()


class HistoryScreen(ModalScreen[Path | None]):
    """The saved chats; dismissed with the path of the one to reopen (None: none).

    `rename` and `trash` change the files (they raise ConfigError, shown in one line); the
    chat open now (`current`) is never moved to the trash.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("down", "to_list", show=False),
    ]

    def __init__(
        self,
        chats: list[SavedChat],
        current: Path | None = None,
        rename: Rename = rename_chat,
        trash: Trash = trash_chat,
    ) -> None:
        super().__init__()
        self.chats = list(chats)
        self.current = current
        self.shown: list[SavedChat] = []  # the chats the search finds, as listed
        self.renaming: SavedChat | None = None  # the chat whose title is being typed
        self.deleting: Path | None = None  # the chat a first d asked to delete
        self._rename, self._trash = rename, trash

    def compose(self) -> ComposeResult:
        with Vertical(id="history"):
            yield Static(Text.assemble(("Saved chats", "bold"), (f"  newest first · {KEYS}", "dim")))
            yield Input(placeholder="search every question and answer", id="search")
            yield Input(id="title")
            yield ChatList(id="chats")
            yield Static("", id="history-note")

    def on_mount(self) -> None:
        self.query_one("#title").display = False
        self.refill()
        self.query_one(ChatList).focus()

    # -- the list ---------------------------------------------------------------------

    def refill(self, keep: Path | None = None, at: int = 0) -> None:
        """List the chats the search finds; highlight `keep` (else the one at `at`)."""
        query = self.query_one("#search", Input).value
        words = query.split()
        hits = [(chat, near) for chat in self.chats if (near := matches(chat, query)) is not None]
        self.shown = [chat for chat, _ in hits]
        chats = self.query_one(ChatList)
        chats.set_options(Option(chat_line(c, c.path == self.current, near, words)) for c, near in hits)
        if self.shown:
            paths = [chat.path for chat in self.shown]
            chats.highlighted = paths.index(keep) if keep in paths else min(at, len(paths) - 1)
        self.say("" if self.shown else f"no saved chat has {' '.join(words)}" if words else "no saved chats")

    def say(self, note: str) -> None:
        self.query_one("#history-note", Static).update(Text(note, "italic"))

    def chosen(self) -> SavedChat | None:
        """The highlighted chat."""
        index = self.query_one(ChatList).highlighted
        return self.shown[index] if index is not None and index < len(self.shown) else None

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.shown[event.option_index].path)

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.keep_it()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "search":
            chosen = self.chosen()
            self.refill(chosen.path if chosen else None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "title":
            self.finish_rename(event.value)
        else:
            self.action_to_list()

    def on_key(self, event: events.Key) -> None:
        if event.key not in ("d", "escape"):  # Esc after a first d only keeps the chat
            self.keep_it()

    def action_search(self) -> None:
        self.query_one("#search").focus()

    def action_to_list(self) -> None:
        if self.focused is self.query_one("#search"):
            self.query_one(ChatList).focus()

    def action_close(self) -> None:
        if self.renaming is not None:
            self.end_rename()
        elif self.deleting is not None:
            self.keep_it()
        else:
            self.dismiss(None)

    def tell(self, text: str, title: str, warning: bool = False) -> None:
        self.notify(text, title=title, severity="warning" if warning else "information", markup=False)

    # -- rename -----------------------------------------------------------------------

    def action_rename(self) -> None:
        chat = self.chosen()
        if chat is None:
            return
        self.renaming = chat
        title = self.query_one("#title", Input)
        title.value, title.display = chat.name, True
        title.focus()
        self.say("a title for this chat: Enter sets it (empty: its first question again), Esc keeps the old")

    def end_rename(self) -> None:
        self.renaming = None
        self.query_one("#title").display = False
        self.query_one(ChatList).focus()
        self.say("")

    def finish_rename(self, typed: str) -> None:
        chat, title = self.renaming, one_line(typed)
        self.end_rename()
        if chat is None or title == chat.name:
            return
        try:
            self._rename(chat.path, title)
        except ConfigError as exc:
            self.tell(str(exc), "not renamed", warning=True)
            return
        self.chats[self.chats.index(chat)] = replace(chat, title=title)
        self.refill(chat.path)
        self.tell(title or f"no title: it shows its first question, {chat.question}", "chat renamed")

    # -- delete -----------------------------------------------------------------------

    def keep_it(self) -> None:
        """Another key after a first d: nothing is deleted."""
        if self.deleting is not None:
            self.deleting = None
            self.say("")

    def action_delete(self) -> None:
        chat = self.chosen()
        if chat is None:
            return
        if chat.path == self.current:
            self.tell(
                "this is the chat open now: /new (or open another), then delete it", "not deleted", True
            )
            return
        if self.deleting != chat.path:
            self.deleting = chat.path
            self.say(f"press d again to move “{chat.name}” to the trash (any other key keeps it)")
            return
        self.keep_it()
        try:
            moved = self._trash(chat.path)
        except ConfigError as exc:
            self.tell(str(exc), "not deleted", warning=True)
            return
        at = self.shown.index(chat)
        self.chats.remove(chat)
        self.refill(at=at)
        self.tell(f"moved to {moved}; move it back to {chat.path.parent} to restore it", "chat deleted")
