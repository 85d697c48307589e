"""Backends are plugins, found through the entry-point group `rsdchat.backends`.

A plugin distribution (e.g. rsdchat-llamacpp) declares

    [project.entry-points."rsdchat.backends"]
    llamacpp = "rsdchat_llamacpp:LlamaCppBackend"

where the object is a factory `(settings) -> Backend`.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from rsdchat.errors import ConfigError
from rsdchat.protocols import Backend, BackendFactory
from rsdchat.settings import Settings

GROUP = "rsdchat.backends"


def available_backends() -> dict[str, EntryPoint]:
    """Installed backend plugins by name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_backend(name: str, settings: Settings) -> Backend:
    """Create the backend `name`; unknown or broken plugins get a one-line ConfigError."""
    found = available_backends()
    if name not in found:
        known = ", ".join(sorted(found)) or "none installed"
        raise ConfigError(f"unknown backend {name!r}; installed backends: {known}")
    try:
        factory: BackendFactory = found[name].load()
    except ImportError as exc:
        raise ConfigError(f"backend {name!r} is installed but cannot be imported: {exc}") from None
    return factory(settings)
