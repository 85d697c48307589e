"""The `vllm` backend plugin: its settings, its factory and its command (importing this starts nothing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rsdchat.plugin_api import Backend, BackendPlugin
from rsdchat_vllm.config import VllmConfig

if TYPE_CHECKING:
    import typer


def _create(config: VllmConfig) -> Backend:
    from rsdchat_vllm.backend import VllmBackend

    return VllmBackend(config)


def _commands(app: typer.Typer) -> None:
    from rsdchat_vllm.serve_models import register

    register(app)


PLUGIN = BackendPlugin(
    name="vllm",
    config=VllmConfig,
    create=_create,
    title="vLLM servers rsdchat starts, watches and stops on this machine (its GPUs, or vLLM's CPU build)",
    commands=_commands,
)
