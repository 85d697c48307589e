"""llama.cpp in process: each GGUF file loaded once, draft and target handed out by role."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from rsdchat.plugin_api import PROGRESS, Role, StepGenerator
from rsdchat_llamacpp import embedded
from rsdchat_llamacpp.embedded import ModelError, repair_model, resolve_model, verify_model
from rsdchat_llamacpp.generator import LlamaModel
from rsdchat_llamacpp.plugin import LlamaCppConfig


class LlamaCppBackend:
    """Loads each GGUF once; draft and target given the same file share one model."""

    def __init__(self, config: LlamaCppConfig) -> None:
        self.config = config
        self._models: dict[Path, LlamaModel] = {}
        self._verified: dict[str, str] = {}  # model -> what `verify` found (draft and target may share it)
        self._verifying = threading.Lock()

    def generator(self, role: Role, model: str) -> LlamaModel:
        path = resolve_model(model, self.config.cache_dir)
        if path not in self._models:
            try:
                self._models[path] = self._load(path, model)
            except ModelError:  # llama.cpp refused a cached copy the sampled check passed
                problem = repair_model(model, self.config.cache_dir)
                if problem is None:  # its whole sha256 is right: the error is llama.cpp's own
                    raise
                PROGRESS.info(
                    f"model {model!r}: llama.cpp could not read the cached copy ({problem}); rebuilt it"
                )
                self._models[path] = self._load(path, model)
        return self._models[path]

    def _load(self, path: Path, model: str) -> LlamaModel:
        name = model if model in embedded.EMBEDDED_MODELS else path.name
        threads = self.config.threads or os.cpu_count() or 1
        return LlamaModel(
            path, name=name, n_ctx=self.config.n_ctx, threads=threads, n_batch=self.config.n_batch
        )

    def verify(self, role: Role, model: str) -> str:
        """`rsdchat doctor`: the model file checked in full (a damaged cached copy is rebuilt)."""
        with self._verifying:
            if model not in self._verified:
                self._verified[model] = verify_model(model, self.config.cache_dir)
            return self._verified[model]

    def model_names(self) -> tuple[str, ...]:
        """The embedded models, by name (any .gguf path loads too)."""
        return tuple(embedded.EMBEDDED_MODELS)

    async def release_model(self, model: StepGenerator) -> None:
        """Close `model` (the chat's `/model` put another in its place); the others stay loaded."""
        for path, loaded in list(self._models.items()):
            if loaded is model:
                del self._models[path]
                loaded.close()

    async def aclose(self) -> None:
        for model in self._models.values():
            model.close()
        self._models.clear()
