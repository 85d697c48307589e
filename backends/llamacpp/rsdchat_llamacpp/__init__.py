"""rsdchat backend: llama.cpp in process (llama-cpp-python).

Registered in the entry-point group `rsdchat.backends` as `llamacpp`. Models are
embedded names (see `rsdchat_llamacpp.models.EMBEDDED_MODELS`) or GGUF paths.
"""

from __future__ import annotations

import os
from pathlib import Path

from rsdchat.settings import Settings
from rsdchat.types import Role
from rsdchat_llamacpp.model import LlamaModel
from rsdchat_llamacpp.models import EMBEDDED_MODELS, ModelError, resolve_model

__all__ = ["EMBEDDED_MODELS", "LlamaCppBackend", "LlamaModel", "ModelError"]


class LlamaCppBackend:
    """Loads each GGUF once; draft and target given the same file share one model."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._models: dict[Path, LlamaModel] = {}

    def generator(self, role: Role, model: str) -> LlamaModel:
        path = resolve_model(model, self._settings.cache_dir)
        if path not in self._models:
            name = model if model in EMBEDDED_MODELS else path.name
            threads = self._settings.threads or os.cpu_count() or 1
            self._models[path] = LlamaModel(path, name=name, n_ctx=self._settings.n_ctx, threads=threads)
        return self._models[path]

    async def aclose(self) -> None:
        for model in self._models.values():
            model.close()
        self._models.clear()
