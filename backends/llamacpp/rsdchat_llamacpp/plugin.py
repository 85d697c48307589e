"""The `llamacpp` backend plugin: its settings and its factory (importing this loads no model)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from rsdchat.plugin_api import RUNTIME_ONLY, Backend, BackendPlugin, PluginConfig


class LlamaCppConfig(PluginConfig):
    """Settings of llama.cpp in process: `[backends.llamacpp]`, `RSDCHAT_<FIELD>`, `--<field>`."""

    n_ctx: int = Field(4096, ge=256, description="context window of each model, in tokens")
    n_batch: int = Field(
        512, ge=1, description="prompt tokens read per batch", json_schema_extra=RUNTIME_ONLY
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads per model (default: all cores)", json_schema_extra=RUNTIME_ONLY
    )
    prm_head: Path | None = Field(
        None,
        description="reward head file for draft-prm (default: the one shipped for the embedded draft)",
    )
    cache_dir: Path | None = Field(
        None,
        description="where embedded models are assembled (default: ~/.cache/rsdchat)",
        json_schema_extra=RUNTIME_ONLY,
    )


def _create(config: LlamaCppConfig) -> Backend:
    from rsdchat_llamacpp.backend import LlamaCppBackend

    return LlamaCppBackend(config)


PLUGIN = BackendPlugin(
    name="llamacpp",
    config=LlamaCppConfig,
    create=_create,
    title="llama.cpp in process (GGUF files, the embedded Qwen2.5-Coder pair)",
)
