"""llama.cpp in process: each GGUF file loaded once, draft and target handed out by role."""

from __future__ import annotations

import os
from pathlib import Path

from rsdchat.types import Role
from rsdchat_llamacpp.embedded import EMBEDDED_MODELS, resolve_model
from rsdchat_llamacpp.generator import LlamaModel
from rsdchat_llamacpp.plugin import LlamaCppConfig


class LlamaCppBackend:
    """Loads each GGUF once; draft and target given the same file share one model."""

    def __init__(self, config: LlamaCppConfig) -> None:
        self.config = config
        self._models: dict[Path, LlamaModel] = {}

    def generator(self, role: Role, model: str) -> LlamaModel:
        path = resolve_model(model, self.config.cache_dir)
        if path not in self._models:
            name = model if model in EMBEDDED_MODELS else path.name
            threads = self.config.threads or os.cpu_count() or 1
            self._models[path] = LlamaModel(
                path, name=name, n_ctx=self.config.n_ctx, threads=threads, n_batch=self.config.n_batch
            )
        return self._models[path]

    async def aclose(self) -> None:
        for model in self._models.values():
            model.close()
        self._models.clear()
