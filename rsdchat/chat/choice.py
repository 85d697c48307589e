"""What a chat runs with: its settings (changed by /delta, /reward, … as `Settings.replace`) and extras."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from rsdchat.core.errors import ConfigError
from rsdchat.core.protocols import RewardSource
from rsdchat.core.weighting import SYMBOLS
from rsdchat.in_force import NO_EXTRAS, STEPS, ChatExtras, InForce, Style, in_force
from rsdchat.settings import Settings

CHAT_SETTINGS = ("reward", "mode", "weighting", "delta", "alpha", "p", "beta")
"""The settings a chat changes while it runs (and keeps in its transcript)."""


@dataclass(frozen=True)
class Choice:
    """The settings a chat was started with, as the user has changed them since, and its extras."""

    settings: Settings
    extras: ChatExtras = NO_EXTRAS

    def set(self, **changes: Any) -> Choice:
        """Settings changed (validated by `Settings`: ConfigError naming a bad value in the chat's words)."""
        try:
            return replace(self, settings=self.settings.replace(**changes))
        except ConfigError as exc:  # "setting alpha: …" is said "α: …", as the chat's commands name it
            said = str(exc)
            for name, symbol in SYMBOLS.items():
                said = said.replace(f"setting {name}: ", f"{symbol}: ", 1)
            raise ConfigError(said) from None

    def with_extras(self, **changes: Any) -> Choice:
        return replace(self, extras=replace(self.extras, **changes))

    def in_force(self, reward: RewardSource | None) -> InForce:
        return in_force(self.settings, reward, self.extras)

    def to_dict(self) -> dict[str, Any]:
        """As a transcript keeps it (`knobs` of a session or change record; the question is in its own)."""
        data: dict[str, Any] = self.settings.model_dump(mode="json", include=set(CHAT_SETTINGS))
        extras = {f.name: getattr(self.extras, f.name) for f in fields(self.extras) if f.name != "question"}
        extras["style"] = self.extras.style.value if self.extras.style is not None else None
        return {name: data[name] for name in CHAT_SETTINGS} | extras

    @classmethod
    def from_dict(cls, data: dict[str, Any], settings: Settings) -> Choice:
        """What a saved transcript chose, on top of `settings`; ConfigError on a value that makes no sense."""
        try:
            if not isinstance(data.get("reward"), str):
                raise ValueError("reward must be a name")
            chosen = settings.replace(**{k: data[k] for k in CHAT_SETTINGS if k in data})
            given = {f.name: data.get(f.name) for f in fields(ChatExtras) if f.name != "question"}
            for name in ("reward_url", "reward_model", "system", "steps"):
                if given[name] is not None and not isinstance(given[name], str):
                    raise ValueError(f"{name} must be text, got {given[name]!r}")
            if given["steps"] is not None and given["steps"] not in STEPS:
                raise ValueError(f"unknown steps {given['steps']!r}")
            style = given.pop("style")
            return cls(chosen, ChatExtras(style=Style(style) if style is not None else None, **given))
        except (ConfigError, TypeError, ValueError) as exc:  # Settings says "setting delta: …"
            raise ConfigError(f"bad settings in transcript: {str(exc).removeprefix('setting ')}") from None
