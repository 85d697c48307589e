"""Everything a backend plugin may import from rsdchat, in one place.

A plugin (`backends/<name>/rsdchat_<name>`) imports `rsdchat.plugin_api` and nothing else
of rsdchat (tests/test_architecture.py holds every plugin here to that), so what is
promised to plugin authors is exactly this list, and the rest of rsdchat can change
shape without breaking one. docs/backends.md ("Writing a backend plugin") says how a plugin is put together.

What is here: the algorithm's types and the protocols a backend implements
(`rsdchat.core`); registering a plugin, its settings and its reward sources;
`rsdchat doctor`'s `RoleCheck`; plumbing (progress lines, threads, files written
whole, units); and what a plugin that adds a CLI command needs (rsdchat-vllm's
`serve-models`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rsdchat.core.errors import BackendError, ConfigError, ContextFull, RsdchatError, redact
from rsdchat.core.protocols import (
    Backend,
    Feature,
    ListsModels,
    Logprobs,
    ReadsStates,
    Releases,
    RewardSource,
    Score,
    ServesStates,
    StepGenerator,
    TokenSink,
)
from rsdchat.core.types import (
    Assist,
    Context,
    FinishReason,
    Generation,
    Message,
    ModelInfo,
    Role,
    StepRequest,
    Usage,
    ends_a_step,
    kept_of,
    step_end,
)
from rsdchat.doctor import RoleCheck, time_tiny_step
from rsdchat.files import TEMP_SUFFIX, WriteError, clean_temps, replace_with_temp, write_atomic
from rsdchat.plugins import RUNTIME_ONLY, BackendPlugin, PluginConfig, RewardContext, RewardPlugin
from rsdchat.progress import PROGRESS
from rsdchat.rewards import split_spec
from rsdchat.settings import Settings
from rsdchat.threads import in_thread
from rsdchat.units import si

if TYPE_CHECKING:
    from rsdchat.cli.options import Given, with_settings
    from rsdchat.cli.running import run
    from rsdchat.prm.head import STEP_TAG_ID, PrmHead

# What a plugin's own command needs, imported when first asked for: rsdchat.cli makes its
# commands from the plugins' settings as it is imported, so importing it here (while a plugin
# imports this module) would find every plugin half-imported and leave them all out.
# The process reward head needs numpy, which a plugin without it never asks for.
_LAZY = {
    "Given": "rsdchat.cli.options",
    "with_settings": "rsdchat.cli.options",
    "run": "rsdchat.cli.running",
    "PrmHead": "rsdchat.prm.head",
    "STEP_TAG_ID": "rsdchat.prm.head",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [
    "PROGRESS",
    "RUNTIME_ONLY",
    "STEP_TAG_ID",
    "TEMP_SUFFIX",
    "Assist",
    "Backend",
    "BackendError",
    "BackendPlugin",
    "ConfigError",
    "Context",
    "ContextFull",
    "Feature",
    "FinishReason",
    "Generation",
    "Given",
    "ListsModels",
    "Logprobs",
    "Message",
    "ModelInfo",
    "PluginConfig",
    "PrmHead",
    "ReadsStates",
    "Releases",
    "RewardContext",
    "RewardPlugin",
    "RewardSource",
    "Role",
    "RoleCheck",
    "RsdchatError",
    "Score",
    "ServesStates",
    "Settings",
    "StepGenerator",
    "StepRequest",
    "TokenSink",
    "Usage",
    "WriteError",
    "clean_temps",
    "ends_a_step",
    "in_thread",
    "kept_of",
    "redact",
    "replace_with_temp",
    "run",
    "si",
    "split_spec",
    "step_end",
    "time_tiny_step",
    "with_settings",
    "write_atomic",
]
