"""The openai backend's settings (`OpenAIConfig`), and each role's servers as the client uses them.

`OpenAIConfig` is the one declaration of this plugin's settings (rsdchat turns it into
the `[backends.openai]` TOML table, environment variables and flags); `BackendConfig`
is what the client reads from it: one `RoleEndpoint` per role that has a URL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rsdchat.plugin_api import RUNTIME_ONLY, ConfigError, PluginConfig, Role

_COUNT = re.compile(r"(\d+(?:\.\d*)?(?:e\d+)?)\s*([kmbgt]?)", re.IGNORECASE)
_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(value: object) -> int:
    """A parameter count: 1500000000, "1.5B", "500M", "135m", "1.5e9" (a ValueError otherwise)."""
    found = _COUNT.fullmatch(value.strip().replace("_", "")) if isinstance(value, str) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        count = float(value)
    elif found is not None:
        count = float(found[1]) * _UNITS[found[2].lower()]
    else:
        count = 0.0
    if not 1e3 <= count < 1e16:  # also NaN; "1.5" alone is a slip for 1.5B
        raise ValueError("give the model's parameter count, like 1.5B, 500M or 135000000")
    return round(count)


def _role_params(role: str) -> Any:
    return Field(
        None,
        description=f"parameters of the {role} model, for the FLOPs estimate (e.g. 1.5B, 500M; default: "
        "counted from the checkpoint a vllm server loads, else read from the model's name, else unknown)",
        json_schema_extra=RUNTIME_ONLY,
    )


class ClientConfig(PluginConfig):
    """How rsdchat's HTTP client talks to model servers: shared by every backend that uses it."""

    http_read_timeout: float = Field(
        60.0,
        gt=0,
        allow_inf_nan=False,
        description="longest silence allowed from a model server (its first token included); not retried",
        json_schema_extra=RUNTIME_ONLY,
    )
    draft_logprobs: bool = Field(True, description="ask the draft server for token log-probabilities")
    draft_params: int | str | None = _role_params("draft")
    target_params: int | str | None = _role_params("target")
    reward_params: int | str | None = _role_params("reward")

    @field_validator("draft_params", "target_params", "reward_params", mode="before")
    @classmethod
    def _params(cls, value: object) -> int | None:
        return None if value is None or value == "" else parse_count(value)

    def params(self, role: Role) -> int | None:
        """The parameter count set for `role`'s model (None: not set)."""
        value = getattr(self, f"{role.value}_params")
        return int(value) if value is not None else None


class OpenAIConfig(ClientConfig):
    """Models on OpenAI-compatible servers: `[backends.openai]`, `RSDCHAT_<FIELD>`, `--<field>`."""

    base_url: str | None = Field(
        default_factory=lambda: os.environ.get("OPENAI_BASE_URL") or None,
        description="server URL(s) of every role without its own (default: $OPENAI_BASE_URL)",
        json_schema_extra=RUNTIME_ONLY,
    )
    api_key_env: str | None = Field(
        None,
        description="environment variable with the key of every role without its own "
        "(default for base_url's servers: OPENAI_API_KEY, when it is set)",
        json_schema_extra=RUNTIME_ONLY,
    )
    draft_url: str | None = Field(
        None, description="draft server URL(s), comma-separated", json_schema_extra=RUNTIME_ONLY
    )
    target_url: str | None = Field(
        None, description="target server URL(s), comma-separated", json_schema_extra=RUNTIME_ONLY
    )
    reward_url: str | None = Field(
        None, description="reward-model server URL(s), comma-separated", json_schema_extra=RUNTIME_ONLY
    )
    reward_model: str | None = Field(
        None, description="served reward model (default: the only one the reward server serves)"
    )
    draft_states_url: str | None = Field(
        None,
        description="a vLLM server of the draft as an embedding model "
        "(`vllm serve DRAFT --runner pooling --convert embed`): `rsdchat train-prm` reads the draft's "
        "hidden states there",
        json_schema_extra=RUNTIME_ONLY,
    )
    draft_api_key_env: str | None = Field(
        None,
        description="environment variable holding the draft server's API key",
        json_schema_extra=RUNTIME_ONLY,
    )
    target_api_key_env: str | None = Field(
        None,
        description="environment variable holding the target server's API key",
        json_schema_extra=RUNTIME_ONLY,
    )
    reward_api_key_env: str | None = Field(
        None,
        description="environment variable holding the reward server's API key",
        json_schema_extra=RUNTIME_ONLY,
    )
    http_connect_timeout: float = Field(
        5.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds to connect to a model server",
        json_schema_extra=RUNTIME_ONLY,
    )
    http_retries: int = Field(
        2,
        ge=0,
        description="retries after a timeout, a 5xx answer or a lost connection",
        json_schema_extra=RUNTIME_ONLY,
    )
    chat_template: str | None = Field(
        None, description="for servers that cannot render one: 'chatml', a Jinja file, or the template text"
    )

    @field_validator("base_url", "draft_url", "target_url", "reward_url", "draft_states_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        parse_urls(value)  # raises ValueError naming the bad URL
        return value

    @field_validator("api_key_env", "draft_api_key_env", "target_api_key_env", "reward_api_key_env")
    @classmethod
    def _variable_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.fullmatch(value):
            raise ValueError(
                "give the name of the environment variable that holds the key (like GPU_BOX_KEY), "
                "not the key itself (what was given is not shown)"
            )
        return value


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


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
    api_key_env: str | None  # the variable's name; its value is read once and never shown
    connect_timeout: float
    read_timeout: float
    retries: int

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
    draft_states: RoleEndpoint | None = None  # the draft as an embedding model (train-prm)
    reward_model: str | None = None
    chat_template: str | None = None
    draft_logprobs: bool = True

    @classmethod
    def of(cls, config: OpenAIConfig) -> BackendConfig:
        """The endpoints `config` describes; a bad URL gets a ConfigError naming the setting."""
        roles: dict[str, RoleEndpoint | None] = {}
        for role in Role:
            own = getattr(config, f"{role.value}_url")
            urls = own or config.base_url  # a role's own setting wins over the one for all
            key_env = getattr(config, f"{role.value}_api_key_env") or config.api_key_env
            if key_env is None and not own and os.environ.get("OPENAI_API_KEY"):
                key_env = "OPENAI_API_KEY"  # the OpenAI clients' pair: OPENAI_BASE_URL with OPENAI_API_KEY
            try:
                roles[role.value] = (
                    RoleEndpoint(
                        role=role,
                        urls=urls,
                        api_key_env=key_env,
                        connect_timeout=config.http_connect_timeout,
                        read_timeout=config.http_read_timeout,
                        retries=config.http_retries,
                    )
                    if parse_urls(urls)
                    else None
                )
            except (ValidationError, ValueError) as exc:
                raise ConfigError(_describe(exc, role)) from None
        states = None
        if parse_urls(config.draft_states_url):
            draft = roles["draft"]
            states = RoleEndpoint(
                role=Role.DRAFT,
                urls=config.draft_states_url,
                api_key_env=draft.api_key_env if draft is not None else config.api_key_env,
                connect_timeout=config.http_connect_timeout,
                read_timeout=config.http_read_timeout,
                retries=config.http_retries,
            )
        return cls(
            draft=roles["draft"],
            target=roles["target"],
            reward=roles["reward"],
            draft_states=states,
            reward_model=config.reward_model or None,
            chat_template=config.chat_template or None,
            draft_logprobs=config.draft_logprobs,
        )

    def endpoint(self, role: Role) -> RoleEndpoint:
        """The endpoint of `role`, or a ConfigError saying which flag sets it."""
        endpoint = {Role.DRAFT: self.draft, Role.TARGET: self.target, Role.REWARD: self.reward}[role]
        if endpoint is None:
            name = role.value
            raise ConfigError(
                f"setting {name}_url: the openai backend needs the {name} server's URL "
                f"(--{name}-url http://HOST:PORT, or --base-url for every role, or $OPENAI_BASE_URL)"
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
