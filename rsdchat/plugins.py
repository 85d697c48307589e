"""Plugins: backends and reward sources, found through entry points.

A backend distribution (e.g. rsdchat-llamacpp) declares

    [project.entry-points."rsdchat.backends"]
    llamacpp = "rsdchat_llamacpp.plugin:PLUGIN"

where `PLUGIN` is a `BackendPlugin`: its name, its settings model (one pydantic model
whose fields, defaults and descriptions become the `[backends.<name>]` TOML table,
the `RSDCHAT_<FIELD>` environment variables and the `--<field>` flags), and the
factory that makes the backend from that config. Reward sources, built-in ones
included, are `RewardPlugin`s in the group `rsdchat.rewards`.

The entry-point objects are small: importing one must not load a heavy engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from rsdchat.core.errors import ConfigError
from rsdchat.core.protocols import Backend, RewardSource, StepGenerator

if TYPE_CHECKING:
    import typer

C = TypeVar("C", bound="PluginConfig")

BACKENDS = "rsdchat.backends"
REWARDS = "rsdchat.rewards"


class PluginConfig(BaseModel):
    """Base of a plugin's settings model: frozen, and unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


RUNTIME_ONLY: dict[str, Any] = {"runtime_only": True}
"""`json_schema_extra` of a setting that changes how fast or where models run, never what they
write (threads, timeouts, key variables): `rsdchat eval` resumes a results file across them."""


@dataclass(frozen=True)
class BackendPlugin:
    """What a backend distribution registers."""

    name: str
    config: type[PluginConfig]  # its settings: [backends.<name>], RSDCHAT_<FIELD>, --<field>
    create: Callable[[Any], Backend]  # (config) -> Backend; imports the heavy engine lazily
    title: str  # one line for `rsdchat backends` and the --help panel
    commands: Callable[[typer.Typer], None] | None = None  # adds the plugin's own `rsdchat` commands


@dataclass(frozen=True)
class RewardContext:
    """What a reward factory may use: the loaded models and the plugins' settings."""

    draft: StepGenerator | None
    target: StepGenerator | None
    configs: Mapping[str, PluginConfig]  # each backend plugin's resolved settings, by name
    step_delimiter: str = "\n\n"
    options: Mapping[str, Any] = field(default_factory=dict)  # the core settings by name (cascade_low…)

    def config(self, name: str, kind: type[C]) -> C:
        """The settings of backend plugin `name` (its defaults if the section is absent)."""
        config = self.configs.get(name)
        return config if isinstance(config, kind) else kind()

    def need(self, role: Literal["draft", "target"], reward: str) -> StepGenerator:
        model = self.draft if role == "draft" else self.target
        if model is None:
            raise ConfigError(f"reward {reward} needs a {role} model")
        return model


@dataclass(frozen=True)
class RewardPlugin:
    """A reward source by name: built in (entry points of rsdchat itself) or from a plugin."""

    name: str
    description: str  # what it measures, one line
    create: Callable[[RewardContext], RewardSource]
    cost: str = "free"  # "free", or which model it runs ("target", "reward model")


def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def _load(ep: EntryPoint, kind: type[Any], what: str) -> Any:
    try:
        plugin = ep.load()
    except ImportError as exc:
        raise ConfigError(f"{what} {ep.name!r} is installed but cannot be imported: {exc}") from None
    if not isinstance(plugin, kind) or plugin.name != ep.name:
        raise ConfigError(f"{what} {ep.name!r} ({ep.value}) is not a {kind.__name__} named {ep.name!r}")
    return plugin


@cache
def backend_plugins() -> Mapping[str, BackendPlugin]:
    """The installed backend plugins by name (a broken one is skipped: `load_backend` names it)."""
    found = {}
    for name, ep in sorted(_entry_points(BACKENDS).items()):
        try:
            found[name] = _load(ep, BackendPlugin, "backend")
        except ConfigError:
            continue
    return MappingProxyType(found)


def backend_names() -> list[str]:
    """The names of the installed backend plugins, those that cannot be loaded included."""
    return sorted(_entry_points(BACKENDS))


def backend_plugin(name: str) -> BackendPlugin:
    """The backend plugin `name`; a ConfigError lists the installed ones."""
    plugins = backend_plugins()
    if name in plugins:
        return plugins[name]
    eps = _entry_points(BACKENDS)
    if name in eps:  # installed but broken: say why
        _load(eps[name], BackendPlugin, "backend")
    known = ", ".join(sorted(plugins)) or "none installed"
    raise ConfigError(f"unknown backend {name!r}; installed backends: {known}")


def distribution(name: str, group: str = BACKENDS) -> str:
    """The distribution that provides plugin `name` (for listings)."""
    ep = _entry_points(group).get(name)
    return ep.dist.name if ep is not None and ep.dist is not None else "?"


@cache
def reward_plugins() -> Mapping[str, RewardPlugin]:
    """Every reward source by name: rsdchat's own, then the plugins' (a plugin cannot replace one)."""
    found: dict[str, RewardPlugin] = {}
    for name, ep in sorted(_entry_points(REWARDS).items(), key=lambda item: _builtin_first(item[1])):
        if name in found:
            continue
        try:
            found[name] = _load(ep, RewardPlugin, "reward")
        except ConfigError:
            continue
    return MappingProxyType(found)


def _builtin_first(ep: EntryPoint) -> tuple[bool, str]:
    return (not ep.value.startswith("rsdchat."), ep.name)


def reward_plugin(name: str) -> RewardPlugin:
    plugins = reward_plugins()
    if name in plugins:
        return plugins[name]
    eps = _entry_points(REWARDS)
    if name in eps:
        _load(eps[name], RewardPlugin, "reward")
    known = ", ".join(plugins)
    raise ConfigError(f"unknown reward {name!r}; choose one of: {known} (or several joined by '*')")


def load_backend(name: str, configs: Mapping[str, PluginConfig]) -> Backend:
    """Create the backend `name` from its own settings (`configs[name]`, else its defaults)."""
    plugin = backend_plugin(name)
    return plugin.create(configs.get(name) or plugin.config())
