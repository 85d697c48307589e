"""User settings: defaults < TOML config file < RSDCHAT_* environment < command-line flags.

Two kinds of settings models, resolved the same way:

- the core `Settings` (models, reward, ω, budgets, sampling): top-level keys of the file;
- each backend plugin's own config (`BackendPlugin.config`): the file's
  `[backends.<name>]` table.

Every field of either is also `RSDCHAT_<FIELD>` in the environment and `--<field>`
on the command line (`rsdchat.cli.options` generates the flags from these models). A
field that several plugins declare (say `http_read_timeout`) is one variable and one
flag that sets it in each of them. One frozen `Settings` is resolved at the edge (CLI
or TUI) and passed down; nothing reads the environment after that. What the settings put
in force (the engine's policy) is `rsdchat.in_force.in_force`.
"""

from __future__ import annotations

import difflib
import math
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource

from rsdchat.core.errors import ConfigError, looks_secret
from rsdchat.core.policy import Mode
from rsdchat.core.types import Role
from rsdchat.core.weighting import WEIGHTINGS
from rsdchat.files import read_text
from rsdchat.plugins import RUNTIME_ONLY, PluginConfig, backend_names, backend_plugins
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat.rewards import check_reward_spec
from rsdchat.rewards.cascade import HIGH as CASCADE_HIGH
from rsdchat.rewards.cascade import LOW as CASCADE_LOW
from rsdchat.rewards.cascade import TargetMinProb

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

ENV_PREFIX = "RSDCHAT_"


MODELS, RSD, BUDGETS = "Models", "RSD: reward and ω", "Budgets, sampling and prompt"


def setting(
    default: Any,
    description: str,
    panel: str,
    *,
    flag: str | None = None,
    shown_default: str | None = None,
    runtime_only: bool = False,
    **checks: Any,
) -> Any:
    """A settings field: its default, its --help text, its --help panel, and pydantic checks.

    `shown_default`: what `--help` shows as its default, where the value itself is too long.
    `runtime_only`: it changes how the models run, never what they write (see RUNTIME_ONLY).
    """
    extra: dict[str, Any] = {"panel": panel, **({"flag": flag} if flag else {})}
    extra |= {"shown_default": shown_default} if shown_default else {}
    extra |= RUNTIME_ONLY if runtime_only else {}
    return Field(default, description=description, json_schema_extra=extra, **checks)


class Settings(BaseModel):
    """Everything a solve or a chat needs to know, except a backend's own settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: str = setting("llamacpp", "backend plugin for the models (see `rsdchat backends`)", MODELS)
    draft: str = setting("qwen2.5-coder-0.5b", "draft model: a name the backend knows, or a path", MODELS)
    target: str = setting("qwen2.5-coder-1.5b", "target model: a name the backend knows, or a path", MODELS)
    draft_backend: str | None = setting(None, "backend plugin of the draft (default: backend)", MODELS)
    target_backend: str | None = setting(None, "backend plugin of the target (default: backend)", MODELS)
    mode: Mode = setting(Mode.RSD, "rsd, or one model alone for comparison", RSD)
    reward: str = setting(
        "arithmetic*draft-confidence", "reward source (see `rsdchat rewards`); '*' multiplies sources", RSD
    )
    weighting: str = setting("binary", f"weighting ω(r): {', '.join(WEIGHTINGS)}", RSD)
    delta: float | None = setting(
        None, "threshold δ: keep draft steps whose reward ≥ δ (default: the reward's own)", RSD
    )
    alpha: float = setting(10.0, "α of the logistic and likelihood-ratio weightings", RSD, gt=0)
    p: float = setting(0.5, "p of the constant weighting", RSD, ge=0, le=1)
    beta: float = setting(1.0, "β of the hybrid weighting", RSD, gt=0)
    score_target_steps: bool = setting(False, "also score the target's steps (shown, never decided on)", RSD)
    reuse_draft: bool = setting(
        False, "the target checks a rejected draft step in batches and keeps the tokens it agrees with", RSD
    )
    keep_pen: int = setting(
        0,
        "after the target rewrites a rejected draft step it writes the next N too (undrafted, unjudged)",
        RSD,
        ge=0,
    )
    cascade_low: float = setting(
        CASCADE_LOW,
        "cascade reward: a free score below this rejects the step without the target",
        RSD,
        ge=0,
        le=1,
    )
    cascade_high: float = setting(
        CASCADE_HIGH,
        "cascade reward: a free score from this up keeps the step without the target",
        RSD,
        ge=0,
        le=1,
    )
    cascade_check: float = setting(
        TargetMinProb.default_delta,
        "cascade reward: in between, the target keeps a step whose least likely token has this probability",
        RSD,
        gt=0,
        le=1,
    )
    max_steps: int = setting(32, "most steps in an answer", BUDGETS, ge=1)
    max_step_tokens: int = setting(256, "most tokens in one step", BUDGETS, ge=1)
    max_tokens: int = setting(1024, "most tokens in an answer", BUDGETS, ge=1)
    temperature: float = setting(0.0, "sampling temperature; 0 = greedy", BUDGETS, ge=0.0)
    top_p: float = setting(1.0, "nucleus sampling mass", BUDGETS, gt=0.0, le=1.0)
    seed: int = setting(0, "same seed, same transcript", BUDGETS)
    step_delimiter: str = setting("\n\n", "a step ends at this text (a blank line)", BUDGETS, min_length=1)
    stop_at_answer: bool = setting(True, "end the answer at the first complete \\boxed{}", BUDGETS)
    system_prompt: str = setting(
        MATH_SYSTEM_PROMPT,
        "system prompt",
        BUDGETS,
        flag="system",
        shown_default="a math prompt; `rsdchat config` shows it",
    )
    concurrency: int = setting(
        1, "questions (and a question's samples) in flight at once", BUDGETS, runtime_only=True, ge=1
    )

    _backends: Mapping[str, PluginConfig] = PrivateAttr(default_factory=dict)

    @field_validator("delta", "alpha", "beta", "p", "temperature")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("weighting")
    @classmethod
    def _known_weighting(cls, value: str) -> str:
        if value not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {value!r}; choose one of: {', '.join(WEIGHTINGS)}")
        return value

    @field_validator("reward")
    @classmethod
    def _known_reward(cls, value: str) -> str:
        return check_reward_spec(value)

    @model_validator(mode="after")
    def _band(self) -> Settings:
        if self.cascade_low > self.cascade_high:
            raise ValueError(f"cascade_low ({self.cascade_low}) is above cascade_high ({self.cascade_high})")
        return self

    def options(self) -> Mapping[str, Any]:
        """The core settings by name, for reward sources with parameters (RewardContext.options)."""
        return MappingProxyType(self.model_dump())

    def backend_for(self, role: Role) -> str:
        """The backend plugin of `role`: its own setting, else `backend`."""
        own = {Role.DRAFT: self.draft_backend, Role.TARGET: self.target_backend}.get(role)
        return own or self.backend

    # -- plugins' settings ------------------------------------------------------------

    @property
    def backends(self) -> Mapping[str, PluginConfig]:
        """Each installed backend plugin's resolved settings, by plugin name."""
        return MappingProxyType(dict(self._backends))

    def backend_config(self, name: str) -> PluginConfig:
        """The settings of backend plugin `name` (its defaults when nothing was set)."""
        if name in self._backends:
            return self._backends[name]
        plugin = backend_plugins().get(name)
        return plugin.config() if plugin is not None else PluginConfig()

    def with_backends(self, backends: Mapping[str, PluginConfig]) -> Settings:
        copy = self.model_copy()
        copy._backends = dict(backends)
        return copy

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with `changes` (plugin settings kept)."""
        try:
            changed = Settings.model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            raise ConfigError(describe_error(exc, {})) from None
        return changed.with_backends(self._backends)


# -- resolution -------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingField:
    """One setting as the command line and the environment see it."""

    name: str  # the field name, also the TOML key
    info: FieldInfo
    owners: tuple[str, ...]  # "core", or the backend plugins that declare it

    @property
    def flag(self) -> str:
        extra = self.info.json_schema_extra
        flag = extra.get("flag") if isinstance(extra, dict) else None
        return "--" + str(flag or self.name).replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def setting_fields() -> list[SettingField]:
    """Every setting of the core and of the installed backend plugins, each name once."""
    fields: dict[str, SettingField] = {}
    models: list[tuple[str, type[BaseModel]]] = [("core", Settings)]
    models += [(name, plugin.config) for name, plugin in backend_plugins().items()]
    for owner, model in models:
        for name, info in model.model_fields.items():
            known = fields.get(name)
            owners = (*known.owners, owner) if known is not None else (owner,)
            fields[name] = SettingField(name, known.info if known is not None else info, owners)
    return list(fields.values())


def default_config_path() -> Path:
    """$RSDCHAT_CONFIG, else $XDG_CONFIG_HOME/rsdchat/config.toml (~/.config if unset)."""
    if os.environ.get("RSDCHAT_CONFIG"):
        return Path(os.environ["RSDCHAT_CONFIG"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "rsdchat" / "config.toml"


def describe_error(error: ValidationError, origins: Mapping[str, str]) -> str:
    """One line naming the setting, where its value came from, and what is wrong."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "settings"
    given = first.get("input")
    shown = f" (got {given!r})" if isinstance(given, str | int | float) and first["type"] != "missing" else ""
    name = str(first["loc"][0]) if first["loc"] else ""
    if "key" in name or (isinstance(given, str) and looks_secret(given)):
        shown = ""  # never echo what may be a secret
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "is not a setting"
    origin = origins.get(str(first["loc"][0]) if first["loc"] else "", "")
    return f"setting {where}{f' ({origin})' if origin else ''}: {message}{shown}"


def _read_file(path: Path) -> dict[str, Any]:
    """The config file's tables; one line (ConfigError) if it is a folder, not UTF-8, or not TOML."""
    text = read_text(path, "config file")
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    return data


def _split_file(data: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The file's core keys, and its [backends.<name>] tables (a plugin key at the top is an error)."""
    tables = data.pop("backends", {})
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise ConfigError(f"config file {path}: `backends` must hold tables, e.g. [backends.openai]")
    plugins = backend_plugins()
    known = sorted(set(plugins) | set(backend_names()))  # an installed plugin that is broken included
    for name in tables:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise ConfigError(
                f"config file {path}: [backends.{name}] is not an installed backend"
                f"{f' (did you mean [backends.{close[0]}]?)' if close else ''}; "
                f"installed backends: {', '.join(known) or 'none'}"
            )
    for key in data:
        if key not in Settings.model_fields:
            owners = [name for name, plugin in plugins.items() if key in plugin.config.model_fields]
            if owners:
                raise ConfigError(
                    f"config file {path}: {key} is a setting of the {owners[0]} backend; "
                    f"put it in a [backends.{owners[0]}] table"
                )
    return data, tables


def _env(model: type[BaseModel]) -> dict[str, Any]:
    return EnvSettingsSource(model, env_prefix=ENV_PREFIX, case_sensitive=False)()  # type: ignore[arg-type]


def _layers(
    model: type[BaseModel], file: Mapping[str, Any], flags: Mapping[str, Any], path: Path | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The merged values for `model` and where each came from."""
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    env = _env(model)
    for layer, origin in ((file, f"config file {path}"), (env, "environment"), (flags, "flag")):
        for key, value in layer.items():
            if layer is not file and key not in model.model_fields:
                continue
            merged[key] = value
            origins[key] = f"{ENV_PREFIX}{key.upper()}" if layer is env else origin
    return merged, origins


def _validate(model: type[BaseModel], values: dict[str, Any], origins: Mapping[str, str], label: str) -> Any:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        message = describe_error(exc, origins)
        raise ConfigError(message.replace("setting ", f"setting {label}", 1) if label else message) from None


def load_settings(config: Path | None = None, **flags: Any) -> Settings:
    """Resolve settings; `flags` (from the command line) win. A flag of None is "not given".

    Flags may name core or plugin settings; an unknown name is a ConfigError, as is any
    bad value, with one line that names the setting and where its value came from.
    """
    explicit = config is not None or bool(os.environ.get("RSDCHAT_CONFIG"))
    path = config.expanduser() if config is not None else default_config_path()
    if explicit and not path.exists():
        raise ConfigError(f"config file not found: {path}")
    file, tables = _split_file(_read_file(path), path) if path.exists() else ({}, {})
    given = {key: value for key, value in flags.items() if value is not None}
    known = {field.name for field in setting_fields()}
    for key in given:
        if key not in known:
            raise ConfigError(f"setting {key}: is not a setting")
    values, origins = _layers(Settings, file, given, path)
    settings: Settings = _validate(Settings, values, origins, "")
    backends = {}
    for name, plugin in backend_plugins().items():
        values, origins = _layers(plugin.config, tables.get(name, {}), given, path)
        backends[name] = _validate(plugin.config, values, origins, f"[backends.{name}] ")
    return settings.with_backends(backends)


def output_settings(settings: Settings, *, defaults: bool = False) -> dict[str, Any]:
    """The settings that decide what the models write (no RUNTIME_ONLY ones): a run's identity.

    With `defaults`, the same keys with each setting's default value instead.
    """

    def kept(model: BaseModel) -> dict[str, Any]:
        values = (type(model).model_construct() if defaults else model).model_dump(mode="json")
        return {
            name: values[name]
            for name, info in type(model).model_fields.items()
            if not (isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("runtime_only"))
        }

    return {"settings": kept(settings), "backends": {name: kept(c) for name, c in settings.backends.items()}}


def dump(settings: Settings) -> Iterator[tuple[str, dict[str, Any]]]:
    """The resolved settings as (table, values) pairs: the core first, then each backend's."""
    yield "", settings.model_dump(mode="json")
    for name, config in settings.backends.items():
        yield f"backends.{name}", config.model_dump(mode="json")
