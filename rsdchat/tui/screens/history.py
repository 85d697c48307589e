"""The chat list (/history): the saved chats, newest first; Enter reopens one, Esc goes back."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from rsdchat.chat.history import SavedChat


def chat_line(chat: SavedChat, current: bool) -> Text:
    """'2025-06-01 14:03 · 3 questions · What is 12 times 7?' (the chat shown now is marked)."""
    count = f"{chat.questions} question{'s' * (chat.questions != 1)}"
    text = Text.assemble((f"{chat.modified:%Y-%m-%d %H:%M}", "bold"), (f" · {count:<12} · ", "dim"))
    text.append(chat.question or "(no question)")
    if current:
        text.append(" · this chat", "italic")
    text.truncate(200, overflow="ellipsis")
    return text


class HistoryScreen(ModalScreen[Path | None]):
    """The saved chats; dismissed with the path of the one to reopen (None: none)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self, chats: list[SavedChat], current: Path | None = None) -> None:
        super().__init__()
        self.chats = chats
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="history"):
            yield Static(
                Text.assemble(
                    ("Saved chats", "bold"), ("  newest first · Enter reopens one · Esc closes", "dim")
                )
            )
            yield OptionList(
                *(
                    Option(chat_line(chat, chat.path == self.current), id=str(i))
                    for i, chat in enumerate(self.chats)
                ),
                id="chats",
            )

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.chats[event.option_index].path)

    def action_close(self) -> None:
        self.dismiss(None)
