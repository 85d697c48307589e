"""The question box: Enter sends, Shift+Enter (or Ctrl+J) starts a new line, a paste arrives whole
(line breaks included), ↑ / ↓ recall what was sent before, and Tab completes a /command's name,
as in a shell.

A TextArea, as in elia and oterm's multi-line mode: Textual's Input keeps only a paste's first line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import TextArea

from rsdchat.chat.commands import COMMANDS

# Ctrl+J for the terminals that send Shift+Enter as Enter (tmux, most without the kitty keyboard protocol)
NEWLINE_KEYS = ("shift+enter", "ctrl+j", "newline")
APP_KEYS = {"f6", "f7"}  # TextArea's "select line" and "select all": the app's F6 (drafts) and F7 (δ−)


def _text_area_bindings() -> list[BindingType]:
    """TextArea's bindings, less those on keys the app uses."""
    kept: list[BindingType] = []
    for binding in TextArea.BINDINGS:
        if isinstance(binding, Binding):
            keys = [key for key in binding.key.split(",") if key.strip() not in APP_KEYS]
            if not keys:
                continue
            binding = Binding(
                ",".join(keys),
                binding.action,
                binding.description,
                show=binding.show,
                priority=binding.priority,
            )
        kept.append(binding)
    return kept


def one_style(text: str) -> str:
    """Line breaks as '\\n' (a terminal may paste '\\r\\n' or a bare '\\r')."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def typing_command(text: str) -> bool:
    """The text is a /command's name being typed: one line, a '/' first, no space yet."""
    return text.startswith("/") and not any(c.isspace() for c in text)


def complete(text: str, names: Iterable[str]) -> tuple[str, list[str]]:
    """Tab on '/na': the text completed and the names that start with what was typed.

    One name: '/name ' (the arguments come next); several: their longest common prefix;
    none, or not a command's name being typed: the text as it is.
    """
    if not typing_command(text):
        return text, []
    typed = text[1:].lower()
    found = [name for name in names if name.startswith(typed)]
    if len(found) == 1:
        return f"/{found[0]} ", found
    if found:
        first, last = min(found), max(found)  # in sorted order, the ends share what all share
        shared = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first))
        return "/" + first[:shared], found
    return text, found


class Prompt(TextArea, inherit_bindings=False):
    """What the user types: one line or several; `value` is the text, as an Input's is."""

    BINDINGS: ClassVar[list[BindingType]] = _text_area_bindings()

    class Submitted(Message):
        """Enter was pressed: `value` is the whole text, every line of it."""

        def __init__(self, prompt: Prompt, value: str) -> None:
            super().__init__()
            self.prompt, self.value = prompt, value

        @property
        def control(self) -> Prompt:
            return self.prompt

    def __init__(self, placeholder: str = "", *, id: str | None = None) -> None:
        super().__init__(
            id=id,
            soft_wrap=True,
            tab_behavior="focus",  # Tab goes to the transcript, as before
            show_line_numbers=False,
            highlight_cursor_line=False,
            placeholder=placeholder,
        )
        self.sent_before: list[str] = []  # what was sent, oldest first
        self._recalled: int | None = None  # the entry of `sent_before` shown; None: what is being typed
        self._typed = ""  # what was being typed before ↑ recalled an entry

    @property
    def value(self) -> str:
        return self.text

    @value.setter
    def value(self, text: str) -> None:
        self.load_text(text)
        self.move_cursor(self.document.end)

    # -- sending ------------------------------------------------------------------------

    async def _on_key(self, event: events.Key) -> None:
        """Enter sends; Shift+Enter and Ctrl+J start a new line (here, not as bindings: a binding's
        action runs later, and a key typed right after it would come first)."""
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            await self.action_submit()
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.action_newline()
            return
        if event.key == "tab" and typing_command(self.text) and not self.read_only:
            event.stop()
            event.prevent_default()
            self.complete_command()
            return
        await super()._on_key(event)

    async def action_submit(self) -> None:
        self.post_message(self.Submitted(self, self.text))

    def action_newline(self) -> None:
        start, end = self.selection
        self.replace("\n", start, end, maintain_selection_offset=False)

    def complete_command(self) -> None:
        """Tab on a /command's name: complete it, or show the commands it could be."""
        text, found = complete(self.text, COMMANDS)
        if text != self.text:
            self.value = text
        elif found:
            self.app.notify("  ".join(f"/{name}" for name in found), timeout=4, markup=False)
        else:
            self.app.notify(f"no command starts with {text}", severity="warning", timeout=4, markup=False)

    async def _on_paste(self, event: events.Paste) -> None:
        """A paste is inserted whole: every line of it, nothing sent until Enter."""
        event.stop()
        event.prevent_default()
        if self.read_only:
            return
        start, end = self.selection
        result = self.replace(one_style(event.text), start, end, maintain_selection_offset=False)
        self.move_cursor(result.end_location)
        self.focus()

    def sent(self) -> None:
        """The text left the box (a question asked, a command run): remember it, then empty the box."""
        self.remember([self.text])
        self._recalled, self._typed = None, ""
        self.clear()

    def remember(self, texts: Iterable[str]) -> None:
        """Add what was sent (or the questions of a chat reopened) to what ↑ recalls."""
        for text in texts:
            if text.strip() and (not self.sent_before or self.sent_before[-1] != text):
                self.sent_before.append(text)

    # -- ↑ / ↓: what was sent before -----------------------------------------------------

    def action_cursor_up(self, select: bool = False) -> None:
        """On the first line: the entry sent before the one shown; elsewhere the cursor moves up."""
        if select or not self.navigator.is_first_wrapped_line(self.cursor_location) or not self.sent_before:
            super().action_cursor_up(select)
            return
        if self._recalled is None:
            self._typed, self._recalled = self.text, len(self.sent_before) - 1
        elif self._recalled > 0:
            self._recalled -= 1
        else:
            return  # the oldest already
        self.value = self.sent_before[self._recalled]

    def action_cursor_down(self, select: bool = False) -> None:
        """On the last line of a recalled entry: the next one (then what was being typed)."""
        recalled = self._recalled
        if select or recalled is None or not self.navigator.is_last_wrapped_line(self.cursor_location):
            super().action_cursor_down(select)
            return
        if recalled + 1 < len(self.sent_before):
            self._recalled = recalled + 1
            self.value = self.sent_before[recalled + 1]
            self.move_cursor((0, len(self.document[0])))  # on its first line: ↓ goes through its lines
        else:
            self._recalled = None
            self.value = self._typed
