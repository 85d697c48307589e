"""rsdchat backend: llama.cpp in process (llama-cpp-python).

Registered in the entry-point group `rsdchat.backends` as `llamacpp`
(`rsdchat_llamacpp.plugin`). Models are embedded names (see
`rsdchat_llamacpp.embedded.EMBEDDED_MODELS`) or GGUF paths.
"""

from __future__ import annotations

from rsdchat_llamacpp.backend import LlamaCppBackend
from rsdchat_llamacpp.embedded import EMBEDDED_MODELS, ModelError
from rsdchat_llamacpp.generator import LlamaModel
from rsdchat_llamacpp.plugin import LlamaCppConfig

__all__ = ["EMBEDDED_MODELS", "LlamaCppBackend", "LlamaCppConfig", "LlamaModel", "ModelError"]
