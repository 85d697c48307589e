"""Slash commands typed in the chat: one table, parsed without any UI, and changes in words.

`COMMANDS` is the one table of commands: what each does and who runs it (a setting, the
session, or the app). Parsing is pure: `parse_command` splits a line, `change` turns a
settings command into a new `Choice` (raising ConfigError with a one-line message on a
bad value), and `describe_change` says what changed between two `InForce`s.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from rsdchat.chat.choice import Choice
from rsdchat.core.errors import ConfigError
from rsdchat.core.policy import Mode
from rsdchat.core.weighting import SYMBOLS, WEIGHTINGS
from rsdchat.in_force import STEP_WORDS, STEPS, InForce, Style
from rsdchat.plugins import REWARDS, backend_plugins, distribution, reward_plugins
from rsdchat.settings import Settings

Runner = Literal["setting", "session", "app"]


@dataclass(frozen=True)
class CommandSpec:
    usage: str
    help: str
    runner: Runner = "session"  # a setting (`change`), a ChatSession method, or the app (help, quit, …)


def _weighting_usage() -> str:
    def one(name: str) -> str:
        params = " ".join(SYMBOLS.get(p, p) for p in WEIGHTINGS[name].params())
        return f"{name} [{params}]" if params else name

    return " · ".join(one(name) for name in WEIGHTINGS)


COMMANDS: dict[str, CommandSpec] = {
    "delta": CommandSpec(
        "/delta VALUE", "the threshold δ, from the next step; /delta default resets it", "setting"
    ),
    "weighting": CommandSpec("/weighting NAME [PARAMS]", _weighting_usage(), "setting"),
    "reward": CommandSpec(
        "/reward NAME [URL [MODEL]]",
        "reward source ('*' multiplies); a served one: /reward orm URL; /reward default resets",
        "setting",
    ),
    "mode": CommandSpec(
        "/mode MODE", "rsd · target-only · draft-only; the style: math · chat · auto", "setting"
    ),
    "steps": CommandSpec(
        "/steps paragraph|line|sentence",
        "where a step ends, one decision each; /steps default resets",
        "setting",
    ),
    "system": CommandSpec(
        "/system PROMPT", "system prompt from the next question; /system default resets", "setting"
    ),
    "model": CommandSpec(
        "/model [draft|target NAME]",
        "the models loaded and the names known; /model draft NAME loads another (a name or a path)",
    ),
    "retry": CommandSpec("/retry", "ask the last question again with the settings in force"),
    "keep": CommandSpec("/keep", "keep a stopped answer in the models' context"),
    "copy": CommandSpec("/copy", "copy the last answer to the clipboard", "app"),
    "history": CommandSpec(
        "/history", "the saved chats: Enter reopens, / searches, r renames, d deletes", "app"
    ),
    "new": CommandSpec("/new", "start a new chat"),
    "save": CommandSpec("/save [PATH]", "save the transcript as JSONL (steps, rewards, settings)"),
    "load": CommandSpec("/load PATH", "load a saved transcript and continue it"),
    "export": CommandSpec("/export [PATH.md]", "export the transcript as Markdown"),
    "help": CommandSpec("/help", "show the commands and keys", "app"),
    "quit": CommandSpec("/quit", "leave rsdchat (the chat is kept in /history)", "app"),
}
"""Every chat command. The app runs its own ("app") and hands the rest to the session."""
MODE_WORDS = tuple(m.value for m in Mode) + tuple(s.value for s in Style) + ("auto",)


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


def change(name: str, rest: str, choice: Choice, opened: Settings | None = None) -> Choice:
    """What the chat runs with after the settings command `/name rest`; ConfigError on a bad value.

    `opened`: the settings the chat was opened with, which `/reward default` goes back to.
    """
    usage = COMMANDS[name].usage
    if name == "delta":
        if not rest:
            raise ConfigError(f"usage: {usage}")
        return choice.set(delta=None if rest.lower() == "default" else parse_number(rest, "δ"))
    if name == "weighting":
        return _weighting(rest, choice, usage)
    if name == "reward":
        if rest.lower() == "default":
            configured = (opened or choice.settings).reward
            return choice.with_extras(style=None, reward_url=None, reward_model=None).set(
                reward=configured, delta=None
            )
        return _reward(rest, choice, usage)
    if name == "steps":
        word = rest.lower()
        if word != "default" and word not in STEPS:
            choices = ", ".join(f"{name} ({what})" for name, what in STEP_WORDS.items())
            raise ConfigError(f"usage: /steps NAME; choose one of: {choices}, or default")
        return choice.with_extras(steps=None if word == "default" else word)
    if name == "mode":
        word = rest.lower()
        if word in (m.value for m in Mode):
            return choice.set(mode=Mode(word))
        if word in (s.value for s in Style) or word == "auto":
            return choice.with_extras(style=None if word == "auto" else Style(word))
        raise ConfigError(f"unknown mode {rest!r}; choose one of: {', '.join(MODE_WORDS)}")
    if name == "system":
        if not rest:
            raise ConfigError(f"usage: {usage}")
        return choice.with_extras(system=None if rest.lower() == "default" else rest)
    raise ConfigError(f"/{name} does not change a setting")


def server_rewards() -> list[str]:
    """The reward sources that score on a reward server the user names (those a URL is for).

    A served reward model whose distribution's backend has a `reward_url` setting (rsdchat-openai's
    `orm`, `qwen-prm`, …), not one that starts its own server.
    """
    with_url = {
        distribution(name) for name, p in backend_plugins().items() if "reward_url" in p.config.model_fields
    }
    return [
        name
        for name, plugin in reward_plugins().items()
        if plugin.cost == "reward model" and distribution(name, REWARDS) in with_url
    ]


def _reward(rest: str, choice: Choice, usage: str) -> Choice:
    """`/reward NAME [URL [MODEL]]`: a new source, and for a served one its server and model."""
    if not rest:
        raise ConfigError(f"usage: {usage}; choose one of: {', '.join(reward_plugins())}")
    words = rest.split()
    at = next((i for i, word in enumerate(words) if "://" in word), len(words))
    spec = "*".join(part.strip() for part in " ".join(words[:at]).split("*"))
    url, model = (words[at], words[at + 1 :]) if at < len(words) else (None, [])
    if not spec:
        raise ConfigError(f"usage: {usage}: the reward's name comes first")
    if len(model) > 1:
        raise ConfigError(f"usage: {usage}: one model name after the URL, got {' '.join(model)!r}")
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{url!r} is not an http(s) URL (e.g. http://127.0.0.1:8000)")
        served = server_rewards()
        if not any(part in served for part in spec.split("*")):
            which = ", ".join(served) or "none installed"
            raise ConfigError(f"reward {spec} does not use a reward server; a URL is for: {which}")
    # a new source has its own scale: δ and the style go back to the source's defaults
    changed = choice.with_extras(style=None, reward_url=url, reward_model=model[0] if model else None)
    return changed.set(reward=spec, delta=None)


def _weighting(rest: str, choice: Choice, usage: str) -> Choice:
    words = rest.split()
    if not words:
        raise ConfigError(f"usage: {usage}")
    name, values = words[0].lower(), words[1:]
    if name not in WEIGHTINGS:
        raise ConfigError(f"unknown weighting {name!r}; choose one of: {', '.join(WEIGHTINGS)}")
    params = WEIGHTINGS[name].params()
    if len(values) > len(params):
        shown = " ".join(SYMBOLS.get(p, p) for p in params) or "no parameters"
        raise ConfigError(f"weighting {name} takes {shown}, got {' '.join(values)!r}")
    changed = {p: parse_number(v, SYMBOLS.get(p, p)) for p, v in zip(params, values, strict=False)}
    return choice.set(weighting=name, **changed)


def describe_change(before: InForce, after: InForce) -> str:
    """'δ 0.7 → 0.8', 'reward arithmetic → judge; style math → chat', … ('' if nothing changed)."""
    parts = []
    for key in ("mode", "style", "reward", "steps"):
        old, new = getattr(before, key), getattr(after, key)
        if old != new:
            parts.append(f"{key} {getattr(old, 'value', old)} → {getattr(new, 'value', new)}")
    if before.reward_url != after.reward_url:
        parts.append(f"reward server → {after.reward_url or 'the configured one'}")
    old_w, new_w = before.weighting, after.weighting
    if old_w != new_w:
        only_delta = type(old_w) is type(new_w) and {
            k: v for k, v in old_w.values().items() if k != "delta"
        } == {k: v for k, v in new_w.values().items() if k != "delta"}
        if only_delta and old_w.threshold is not None and new_w.threshold is not None:
            parts.append(f"δ {old_w.threshold:g} → {new_w.threshold:g}")
        else:
            parts.append(f"weighting {old_w.describe()} → {new_w.describe()}")
    if before.system != after.system:
        if after.custom_system:
            parts.append(f"system prompt → {_short(after.system)!r}")
        elif before.custom_system:
            parts.append("system prompt → the default")
        # else: the default prompt follows the style, whose change is already said
    return "; ".join(parts)


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
