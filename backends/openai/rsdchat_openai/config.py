"""Where each role's server lives, read from rsdchat's settings.

The backend reads these settings by name (`SETTINGS` lists them, with their
defaults), so it also works with a settings object that predates them: a missing
URL then gets a one-line ConfigError naming the setting to set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rsdchat.errors import ConfigError
from rsdchat.types import Role


class OpenAISettings(Protocol):
    """The settings the openai backend and its reward sources read."""

    draft: str
    target: str
    step_delimiter: str
    draft_url: str | None
    target_url: str | None
    reward_url: str | None
    reward_model: str | None
    draft_api_key_env: str | None
    target_api_key_env: str | None
    reward_api_key_env: str | None
    http_connect_timeout: float
    http_read_timeout: float
    http_retries: int
    chat_template: str | None
    draft_logprobs: bool


# name -> default, for settings objects that do not have the field (yet).
SETTINGS: dict[str, Any] = {
    "draft_url": None,
    "target_url": None,
    "reward_url": None,
    "reward_model": None,
    "draft_api_key_env": None,
    "target_api_key_env": None,
    "reward_api_key_env": None,
    "http_connect_timeout": 5.0,
    "http_read_timeout": 300.0,
    "http_retries": 2,
    "chat_template": None,
    "draft_logprobs": True,
    "step_delimiter": "\n\n",
}


def parse_urls(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """'http://a:8000/v1, http://b:8000' or a list -> normalised server roots, in order.

    A trailing /v1 (the OpenAI clients' habit) is dropped: vLLM's /tokenize and /pooling
    live at the server's root.
    """
    items = re.split(r"[,\s]+", value) if isinstance(value, str) else list(value or ())
    urls: list[str] = []
    for item in items:
        url = str(item).strip().rstrip("/")
        if not url:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{url!r} is not an http(s) URL (e.g. http://gpu-box:8000)")
        url = url.removesuffix("/v1")
        if url not in urls:
            urls.append(url)
    return tuple(urls)


class RoleEndpoint(BaseModel):
    """One role's servers: replicas share its requests (least requests in flight)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    urls: tuple[str, ...] = Field(min_length=1)
    api_key_env: str | None = None  # the variable's name; its value is read once and never shown
    connect_timeout: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    read_timeout: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    retries: int = Field(default=2, ge=0)

    @field_validator("urls", mode="before")
    @classmethod
    def _urls(cls, value: str | Sequence[str] | None) -> tuple[str, ...]:
        return parse_urls(value)

    @property
    def where(self) -> str:
        return ", ".join(self.urls)

    def api_key(self) -> str | None:
        """The key from the environment (None when no variable is configured)."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(
                f"setting {self.role.value}_api_key_env: environment variable {self.api_key_env} is not set"
            )
        return key


class BackendConfig(BaseModel):
    """Every role's endpoint plus the few knobs that are not per role."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    draft: RoleEndpoint | None = None
    target: RoleEndpoint | None = None
    reward: RoleEndpoint | None = None
    reward_model: str | None = None
    chat_template: str | None = None
    draft_logprobs: bool = True
    step_delimiter: str = "\n\n"

    @classmethod
    def from_settings(cls, settings: object) -> BackendConfig:
        """Read the settings by name; a bad value gets a ConfigError naming the setting."""
        value = {name: getattr(settings, name, default) for name, default in SETTINGS.items()}
        roles: dict[str, RoleEndpoint | None] = {}
        for role in Role:
            urls = value[f"{role.value}_url"]
            try:
                roles[role.value] = (
                    RoleEndpoint(
                        role=role,
                        urls=urls,
                        api_key_env=value[f"{role.value}_api_key_env"],
                        connect_timeout=value["http_connect_timeout"],
                        read_timeout=value["http_read_timeout"],
                        retries=value["http_retries"],
                    )
                    if parse_urls(urls)
                    else None
                )
            except (ValidationError, ValueError) as exc:
                raise ConfigError(_describe(exc, role)) from None
        return cls(
            draft=roles["draft"],
            target=roles["target"],
            reward=roles["reward"],
            reward_model=value["reward_model"] or None,
            chat_template=value["chat_template"] or None,
            draft_logprobs=bool(value["draft_logprobs"]),
            step_delimiter=value["step_delimiter"],
        )

    def endpoint(self, role: Role) -> RoleEndpoint:
        """The endpoint of `role`, or a ConfigError saying which flag sets it."""
        endpoint = {Role.DRAFT: self.draft, Role.TARGET: self.target, Role.REWARD: self.reward}[role]
        if endpoint is None:
            name = role.value
            raise ConfigError(
                f"setting {name}_url: the openai backend needs the {name} server's URL "
                f"(--{name}-url http://HOST:PORT, RSDCHAT_{name.upper()}_URL, or {name}_url in the config)"
            )
        return endpoint


_SETTING_OF_FIELD = {
    "urls": "url",
    "connect_timeout": "http_connect_timeout",
    "read_timeout": "http_read_timeout",
    "retries": "http_retries",
}


def _describe(error: Exception, role: Role) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "url"
        message = str(first["msg"]).removeprefix("Value error, ")
    else:
        field, message = "urls", str(error)
    setting = _SETTING_OF_FIELD.get(field, field)
    setting = f"{role.value}_{setting}" if setting in ("url", "api_key_env") else setting
    return f"setting {setting}: {message}"
