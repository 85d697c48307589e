"""The `openai` backend plugin: its settings and its factory (importing this opens no connection)."""

from __future__ import annotations

from rsdchat.plugin_api import Backend, BackendPlugin
from rsdchat_openai.config import OpenAIConfig


def _create(config: OpenAIConfig) -> Backend:
    from rsdchat_openai.backend import OpenAIBackend

    return OpenAIBackend(config)


PLUGIN = BackendPlugin(
    name="openai",
    config=OpenAIConfig,
    create=_create,
    title="OpenAI-compatible servers (vLLM, llama.cpp's server, …) for draft, target and reward",
)
