"""Slash commands typed in the input, and the command palette entries.

Parsing is pure: `parse_command` splits a line, `change_knobs` turns a settings command
into new `Knobs` (raising ConfigError with a one-line message on a bad value), and
`describe_change` says what changed, for the transcript.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol, cast

from rich.table import Table
from rich.text import Text
from textual.command import DiscoveryHit, Hit, Hits, Provider

from rsdchat.engine import Mode
from rsdchat.errors import ConfigError
from rsdchat.protocols import RewardSource
from rsdchat.rewards import REWARDS
from rsdchat.settings import Settings
from rsdchat.tui.session import (
    PARAM_SYMBOL,
    WEIGHTING_PARAMS,
    Knobs,
    Style,
    policy_for,
    style_of,
    system_prompt,
)


@dataclass(frozen=True)
class CommandSpec:
    usage: str
    help: str


COMMANDS: dict[str, CommandSpec] = {
    "delta": CommandSpec(
        "/delta VALUE", "set the threshold δ (from the next step); /delta default resets it"
    ),
    "weighting": CommandSpec(
        "/weighting NAME [PARAMS]",
        "binary [δ] · logistic [α δ] · constant [p] · clip · sigmoidal · likelihood-ratio [α] · hybrid [β]",
    ),
    "reward": CommandSpec("/reward NAME", "reward source: " + ", ".join(REWARDS) + " (join with '*')"),
    "mode": CommandSpec(
        "/mode MODE", "rsd · target-only · draft-only, or the conversation style: math · chat · auto"
    ),
    "system": CommandSpec("/system PROMPT", "system prompt from the next question; /system default resets"),
    "new": CommandSpec("/new", "start a new chat"),
    "save": CommandSpec("/save [PATH]", "save the transcript as JSONL (steps, rewards, settings)"),
    "load": CommandSpec("/load PATH", "load a saved transcript and continue it"),
    "export": CommandSpec("/export [PATH.md]", "export the transcript as Markdown"),
    "help": CommandSpec("/help", "show this help"),
    "quit": CommandSpec("/quit", "leave rsdchat (without asking about an unsaved chat)"),
}

KEYS: tuple[tuple[str, str], ...] = (
    ("enter", "send the question (or run the /command)"),
    ("esc", "stop the answer being written"),
    ("ctrl+↑ / f8", "raise δ"),
    ("ctrl+↓ / f7", "lower δ"),
    ("f4", "show or hide the side panel"),
    ("ctrl+p", "command palette"),
    ("f1", "this help"),
    ("ctrl+q", "quit (twice if the chat is not saved)"),
)

SETTINGS_COMMANDS = ("delta", "weighting", "reward", "mode", "system")
MODE_WORDS = tuple(m.value for m in Mode) + tuple(s.value for s in Style) + ("auto",)


def help_text() -> Table:
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
    return table


def parse_command(line: str) -> tuple[str, str]:
    """'/delta 0.8' -> ('delta', '0.8'); an unknown command raises ConfigError."""
    head, _, rest = line.strip().removeprefix("/").partition(" ")
    name = head.lower()
    if name not in COMMANDS:
        raise ConfigError(f"unknown command /{head}; type /help for the list")
    return name, rest.strip()


def parse_number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {text!r}")
    return value


def change_knobs(name: str, rest: str, knobs: Knobs) -> Knobs:
    """The knobs after the settings command `/name rest`; ConfigError on a bad value."""
    usage = COMMANDS[name].usage
    if name == "delta":
        if not rest:
            raise ConfigError(f"usage: {usage}")
        if rest.lower() == "default":
            return replace(knobs, delta=None)
        return replace(knobs, delta=parse_number(rest, "δ"))
    if name == "weighting":
        return _weighting(rest, knobs, usage)
    if name == "reward":
        if not rest:
            raise ConfigError(f"usage: {usage}; choose one of: {', '.join(REWARDS)}")
        # a new source has its own scale: δ and the style go back to the source's defaults
        spec = "*".join(part.strip() for part in rest.split("*"))
        return replace(knobs, reward=spec, delta=None, style=None)
    if name == "mode":
        word = rest.lower()
        if word in (m.value for m in Mode):
            return replace(knobs, mode=Mode(word))
        if word in (s.value for s in Style):
            return replace(knobs, style=Style(word))
        if word == "auto":
            return replace(knobs, style=None)
        raise ConfigError(f"unknown mode {rest!r}; choose one of: {', '.join(MODE_WORDS)}")
    if name == "system":
        if not rest:
            raise ConfigError(f"usage: {usage}")
        return replace(knobs, system=None if rest.lower() == "default" else rest)
    raise ConfigError(f"/{name} does not change a setting")


def _weighting(rest: str, knobs: Knobs, usage: str) -> Knobs:
    words = rest.split()
    if not words:
        raise ConfigError(f"usage: {usage}")
    name, values = words[0].lower(), words[1:]
    if name not in WEIGHTING_PARAMS:
        raise ConfigError(f"unknown weighting {name!r}; choose one of: {', '.join(WEIGHTING_PARAMS)}")
    params = WEIGHTING_PARAMS[name]
    if len(values) > len(params):
        shown = " ".join(PARAM_SYMBOL[p] for p in params) or "no parameters"
        raise ConfigError(f"weighting {name} takes {shown}, got {' '.join(values)!r}")
    changed = {p: parse_number(v, PARAM_SYMBOL[p]) for p, v in zip(params, values, strict=False)}
    return replace(knobs, weighting=name, **changed)  # type: ignore[arg-type]


def summary(knobs: Knobs, reward: RewardSource | None, settings: Settings) -> dict[str, str]:
    """What is in force, in words (the fields `describe_change` compares)."""
    try:
        weighting = policy_for(knobs, reward, settings).weighting.describe()
    except ConfigError:
        weighting = knobs.weighting
    return {
        "mode": knobs.mode.value,
        "style": style_of(knobs, reward).value,
        "reward": reward.name if reward is not None else knobs.reward,
        "weighting": weighting,
        "system": system_prompt(knobs, reward, settings),
    }


def describe_change(before: dict[str, str], after: dict[str, str], old: Knobs, new: Knobs) -> str:
    """'δ 0.7 → 0.8', 'reward arithmetic → judge; style math → chat', … ('' if nothing changed)."""
    parts = []
    for key, value in after.items():
        if before.get(key) == value:
            continue
        if key == "weighting" and old.weighting == new.weighting and _only_delta(old, new):
            parts.append(f"δ {before[key].rpartition('δ=')[2]} → {value.rpartition('δ=')[2]}")
        elif key == "system":
            if new.system is not None:
                parts.append(f"system prompt → {_short(value)!r}")
            elif old.system is not None:
                parts.append("system prompt → the default")
            # else: the default prompt follows the style, whose change is already said
        else:
            parts.append(f"{key} {before.get(key, '?')} → {value}")
    return "; ".join(parts)


def _only_delta(old: Knobs, new: Knobs) -> bool:
    same_rest = (old.alpha, old.p, old.beta) == (new.alpha, new.p, new.beta)
    return same_rest and "delta" in WEIGHTING_PARAMS.get(new.weighting, ())


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def split_path(rest: str) -> str:
    """A path argument, with shell-style quotes allowed around names with spaces."""
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise ConfigError(f"bad path {rest!r}: {exc}") from None
    if len(words) > 1:
        raise ConfigError(f"one path please, got {len(words)} (quote names with spaces)")
    return words[0] if words else ""


# -- the command palette ------------------------------------------------------------------

PaletteEntry = tuple[str, str, Callable[[], object]]


class _HasEntries(Protocol):
    def palette_entries(self) -> Iterable[PaletteEntry]: ...


class ChatCommands(Provider):
    """rsdchat's entries in the command palette (ctrl+p)."""

    def _entries(self) -> list[PaletteEntry]:
        return list(cast(_HasEntries, self.app).palette_entries())

    async def discover(self) -> Hits:
        for title, help_, callback in self._entries():
            yield DiscoveryHit(title, partial(callback), help=help_)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_, callback in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(callback), help=help_)
