"""The chat's entries in Textual's command palette (ctrl+p): each entry's title, help, and what
it does in the app (`palette_entries`), and the provider that shows them (`ChatCommands`).

An entry runs a slash command (`/mode rsd`), an action of the app (δ up, the side panel), or puts
the start of a command in the input for the user to finish (`/delta `, `/reward NAME http://`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Protocol, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from rsdchat.chat.commands import server_rewards
from rsdchat.core.policy import Mode
from rsdchat.core.weighting import WEIGHTINGS
from rsdchat.in_force import STEPS, Style
from rsdchat.plugins import reward_plugins

PaletteEntry = tuple[str, str, Callable[[], object]]  # title, help, what it does


class HasEntries(Protocol):
    """An app that lists its palette entries (the provider never needs to know more of it)."""

    def palette_entries(self) -> Iterable[PaletteEntry]: ...


class ChatCommands(Provider):
    """rsdchat's entries in the command palette."""

    def _entries(self) -> list[PaletteEntry]:
        return list(cast(HasEntries, self.app).palette_entries())

    async def discover(self) -> Hits:
        for title, help_, callback in self._entries():
            yield DiscoveryHit(title, partial(callback), help=help_)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_, callback in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(callback), help=help_)


class ChatApp(Protocol):
    """What the palette's entries do in the app."""

    def palette_command(self, line: str) -> None: ...
    def prefill(self, text: str) -> None: ...
    async def run_action(self, action: str) -> bool: ...
    def action_stop(self) -> None: ...
    def action_toggle_rejected(self) -> None: ...
    def action_toggle_panel(self) -> None: ...
    async def action_help(self) -> None: ...


def palette_entries(app: ChatApp) -> Iterator[PaletteEntry]:
    """The palette's entries, in the order it lists them."""
    command = app.palette_command
    yield ("Raise δ", "raise the threshold δ one step", partial(app.run_action, "delta(1)"))
    yield ("Lower δ", "lower the threshold δ one step", partial(app.run_action, "delta(-1)"))
    yield ("Set δ…", "type a value for δ", partial(app.prefill, "/delta "))
    yield ("Stop the answer", "cancel the generation in progress (Esc)", app.action_stop)
    for name, cls in WEIGHTINGS.items():
        shown = " ".join(cls.params()) or "no parameters"
        yield (f"Weighting: {name}", f"ω = {name} ({shown})", partial(command, f"/weighting {name}"))
    for name, plugin in reward_plugins().items():
        yield (f"Reward: {name}", plugin.description, partial(command, f"/reward {name}"))
    for mode in Mode:
        yield (f"Mode: {mode.value}", "who writes the steps", partial(command, f"/mode {mode.value}"))
    for style in Style:
        yield (f"Style: {style.value}", "conversation style", partial(command, f"/mode {style.value}"))
    yield (
        "Style: follow the reward source",
        "math for process rewards, chat for outcome",
        partial(command, "/mode auto"),
    )
    for name in server_rewards():
        yield (
            f"Reward server: {name}…",
            f"type the URL of the server that serves {name}",
            partial(app.prefill, f"/reward {name} http://"),
        )
    for steps in STEPS:
        yield (f"Steps: {steps}", "where a step ends", partial(command, f"/steps {steps}"))
    yield (
        "Retry",
        "ask the last question again with the settings now in force",
        partial(command, "/retry"),
    )
    yield ("Keep the stopped answer", "keep it in the models' context", partial(command, "/keep"))
    yield ("Copy the answer", "copy the last answer to the clipboard", partial(command, "/copy"))
    yield ("History", "the saved chats: reopen one", partial(command, "/history"))
    yield ("Rejected drafts", "open or close every rejected draft (F6)", app.action_toggle_rejected)
    yield ("System prompt…", "type a new system prompt", partial(app.prefill, "/system "))
    yield ("New chat", "start over (the settings stay)", partial(command, "/new"))
    yield ("Save transcript", "save as JSONL", partial(command, "/save"))
    yield ("Load transcript…", "type the path of a saved transcript", partial(app.prefill, "/load "))
    yield ("Export Markdown", "write the transcript as Markdown", partial(command, "/export"))
    yield ("Side panel", "show or hide the status panel (F4)", app.action_toggle_panel)
    yield ("Help", "slash commands and keys", app.action_help)
