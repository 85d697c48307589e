"""The help screen: every slash command and key, over the chat (Esc closes it)."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from rsdchat.chat.commands import COMMANDS

GLOSSARY: tuple[tuple[str, str], ...] = (  # one line each at 80 columns
    ("rsd", "the draft writes each step; below δ, the target rewrites it"),
    ("r", "a step's reward, from the /reward source (its bar: r against δ)"),
    ("δ", "threshold: a draft step with r ≥ δ is kept (ctrl+↑/↓, /delta)"),
    ("ω", "the /weighting of r: ω 1 keeps the draft step, ω 0 rejects it"),
    ("eos", "the model ended its reply itself, with no boxed final answer"),
)

KEYS: tuple[tuple[str, str], ...] = (
    ("enter", "send the question (or run the /command)"),
    ("shift+enter / ctrl+j", "a new line in the question (a pasted text arrives whole)"),
    ("↑ / ↓", "the questions sent before (on the input's first or last line)"),
    ("esc", "stop the answer (left out of the context unless /keep)"),
    ("ctrl+↑ / f8", "raise δ"),
    ("ctrl+↓ / f7", "lower δ"),
    ("tab", "complete a /command; else input ↔ transcript (arrows scroll)"),
    ("f6", "open or close every rejected draft (or click one)"),
    ("f4", "show or hide the side panel"),
    ("ctrl+p", "command palette"),
    ("f1", "this help"),
    ("ctrl+q", "quit (the chat is kept in /history)"),
)


def glossary() -> Table:
    """The words of a step's line, one line each (above the reference, with its own narrow column)."""
    table = Table(
        box=None, padding=(0, 2, 0, 0), show_header=False, title="rsdchat help", title_justify="left"
    )
    table.add_column(style="bold", no_wrap=True, width=3)
    table.add_column()
    for word, meaning in GLOSSARY:
        table.add_row(Text(word), Text(meaning))
    return table


def help_table() -> Group:
    """What the words mean, then every slash command and key."""
    return Group(glossary(), Text(""), reference())


def reference() -> Table:
    table = Table(box=None, padding=(0, 2, 0, 0), show_header=False)
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
