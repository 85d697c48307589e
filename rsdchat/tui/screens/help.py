"""The help screen: every slash command and key, over the chat (Esc closes it)."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from rsdchat.chat.commands import COMMANDS

KEYS: tuple[tuple[str, str], ...] = (
    ("enter", "send the question (or run the /command)"),
    ("esc", "stop the answer (left out of the context unless /keep)"),
    ("ctrl+↑ / f8", "raise δ"),
    ("ctrl+↓ / f7", "lower δ"),
    ("tab", "input ↔ transcript (arrows scroll; typing goes to the input)"),
    ("f6", "open or close every rejected draft (or click one)"),
    ("f4", "show or hide the side panel"),
    ("ctrl+p", "command palette"),
    ("f1", "this help"),
    ("ctrl+q", "quit (the chat is kept in /history)"),
)


def help_table() -> Table:
    table = Table(
        box=None, padding=(0, 2, 0, 0), show_header=False, title="rsdchat help", title_justify="left"
    )
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for spec in COMMANDS.values():
        table.add_row(Text(spec.usage), Text(spec.help))  # Text: "[p]" is not markup here
    table.add_row("", "")
    for key, what in KEYS:
        table.add_row(Text(key), Text(what))
    table.add_row("", "")
    table.add_row("", Text("esc, f1 or q closes this help", "dim"))
    return table


class HelpScreen(ModalScreen[None]):
    """Slash commands and keys."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(help_table())
