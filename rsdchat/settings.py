"""User settings: defaults < TOML config file < RSDCHAT_* environment < command-line flags.

One frozen `Settings` object is resolved at the edge (CLI or TUI) and passed down;
nothing reads the environment after that.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rsdchat.engine import Mode, Policy
from rsdchat.errors import ConfigError
from rsdchat.weighting import make_weighting

MATH_SYSTEM_PROMPT = (
    "Please reason step by step, separating the steps with a blank line, "
    "and put your final answer within \\boxed{}."
)


class Settings(BaseSettings):
    """Everything a solve or a chat needs to know."""

    model_config = SettingsConfigDict(env_prefix="RSDCHAT_", frozen=True, extra="forbid")

    backend: str = Field("llamacpp", description="backend plugin for the models (see `rsdchat backends`)")
    draft: str = Field("qwen2.5-coder-0.5b", description="draft model: embedded name or GGUF path")
    target: str = Field("qwen2.5-coder-1.5b", description="target model: embedded name or GGUF path")
    reward: str = Field("arithmetic*draft-confidence", description="reward source (see `rsdchat rewards`)")
    mode: Mode = Mode.RSD
    weighting: str = "binary"
    delta: float | None = Field(None, description="threshold δ; default: the reward source's own")
    alpha: float = Field(10.0, description="α of the logistic and likelihood-ratio weightings")
    p: float = Field(0.5, ge=0.0, le=1.0, description="p of the constant weighting")
    beta: float = Field(1.0, description="β of the hybrid weighting")
    max_steps: int = Field(32, ge=1)
    max_step_tokens: int = Field(256, ge=1)
    max_tokens: int = Field(1024, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
    step_delimiter: str = Field("\n\n", min_length=1)
    system_prompt: str = MATH_SYSTEM_PROMPT
    stop_at_answer: bool = True
    score_target_steps: bool = False
    concurrency: int = Field(1, ge=1, description="questions in flight at once")
    n_ctx: int = Field(4096, ge=256, description="context window of local models")
    threads: int | None = Field(None, ge=1, description="CPU threads for local models")
    cache_dir: Path | None = Field(None, description="where assembled model files are kept")
    # -- models on servers (backend "openai"); see docs/backends.md
    draft_backend: str | None = Field(None, description="backend plugin for the draft (default: backend)")
    target_backend: str | None = Field(None, description="backend plugin for the target (default: backend)")
    draft_url: str | None = Field(None, description="draft server URL(s), comma-separated")
    target_url: str | None = Field(None, description="target server URL(s), comma-separated")
    reward_url: str | None = Field(None, description="reward-model server URL(s), comma-separated")
    reward_model: str | None = Field(
        None, description="served reward model (default: the only one the reward server serves)"
    )
    draft_api_key_env: str | None = Field(
        None, description="environment variable holding the draft server's API key"
    )
    target_api_key_env: str | None = Field(
        None, description="environment variable holding the target server's API key"
    )
    reward_api_key_env: str | None = Field(
        None, description="environment variable holding the reward server's API key"
    )
    http_connect_timeout: float = Field(5.0, gt=0, description="seconds to connect to a model server")
    http_read_timeout: float = Field(300.0, gt=0, description="longest silence allowed from a model server")
    http_retries: int = Field(
        2, ge=0, description="retries after a timeout, a 5xx answer or a lost connection"
    )
    chat_template: str | None = Field(
        None, description="for servers that cannot render one: 'chatml', a Jinja file, or the template text"
    )
    draft_logprobs: bool = Field(True, description="ask the draft server for token log-probabilities")

    @field_validator("delta", "alpha", "beta", "temperature", "http_connect_timeout", "http_read_timeout")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    def policy(self, default_delta: float) -> Policy:
        """The engine policy these settings describe (δ falls back to the reward's default)."""
        delta = self.delta if self.delta is not None else default_delta
        weighting = make_weighting(self.weighting, delta=delta, alpha=self.alpha, p=self.p, beta=self.beta)
        return Policy(
            mode=self.mode,
            weighting=weighting,
            max_steps=self.max_steps,
            max_step_tokens=self.max_step_tokens,
            max_tokens=self.max_tokens,
            stop=(self.step_delimiter,),
            temperature=self.temperature,
            top_p=self.top_p,
            stop_at_answer=self.stop_at_answer,
            score_target_steps=self.score_target_steps,
        )


def default_config_path() -> Path:
    """$RSDCHAT_CONFIG, else $XDG_CONFIG_HOME/rsdchat/config.toml (~/.config if unset)."""
    if os.environ.get("RSDCHAT_CONFIG"):
        return Path(os.environ["RSDCHAT_CONFIG"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "rsdchat" / "config.toml"


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "settings"
    given = first.get("input")
    shown = f" (got {given!r})" if isinstance(given, str | int | float) else ""
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "is not a setting"
    return f"setting {where}: {message}{shown}"


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Resolve settings; `overrides` (CLI flags) win, unset flags are passed as None and ignored.

    Raises ConfigError with one line that names the bad setting or file.
    """
    explicit = config is not None or bool(os.environ.get("RSDCHAT_CONFIG"))
    path = config.expanduser() if config is not None else default_config_path()
    if explicit and not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    toml_file = path if path.is_file() else None

    class _Resolved(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if toml_file is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
            return tuple(sources)

    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        resolved = _Resolved(**given)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except ValueError as exc:  # TOML syntax errors surface as ValueError subclasses
        raise ConfigError(f"config file {path}: {exc}") from None
    return Settings.model_construct(**resolved.model_dump())
