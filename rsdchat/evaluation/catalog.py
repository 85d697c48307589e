"""Every method `rsdchat eval` knows, built from its spec."""

from __future__ import annotations

from typing import Any

from rsdchat.core.errors import ConfigError
from rsdchat.evaluation.methods import SAMPLING, Chain, Method, MethodSpec, RandomRouting, Speculative
from rsdchat.evaluation.search import SEARCHES
from rsdchat.settings import Settings


def build_method(spec: MethodSpec, settings: Settings) -> Method:
    """The method `spec` describes, on top of the run's `settings` (ConfigError on a bad override)."""
    overrides: dict[str, Any] = dict(spec.settings)
    if spec.name in ("maj", "bon", "pbon", "beam"):
        overrides = {**SAMPLING, **overrides}
    try:
        chosen = settings.replace(**overrides)
    except ConfigError as exc:
        raise ConfigError(f"method {spec.text}: {exc}") from None
    if spec.name in ("target-only", "draft-only", "rsd"):
        return Chain(spec, chosen)
    if spec.name == "random":
        return RandomRouting(spec, chosen)
    if spec.name == "sd":
        return Speculative(spec, chosen)
    return SEARCHES[spec.name](spec, chosen)
