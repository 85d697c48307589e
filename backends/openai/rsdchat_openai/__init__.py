"""rsdchat backend: models on OpenAI-compatible servers (vLLM, llama-cpp-python, others).

Registered in the entry-point group `rsdchat.backends` as `openai`
(`rsdchat_openai.plugin`); its reward models over HTTP are in `rsdchat.rewards`
(see `rsdchat_openai.rewards`). Each role talks to its own server(s), given by the
settings `draft_url`, `target_url` and `reward_url` (several comma-separated URLs
share a role's requests).
"""

from __future__ import annotations

from rsdchat_openai.backend import OpenAIBackend
from rsdchat_openai.config import BackendConfig, OpenAIConfig, RoleEndpoint
from rsdchat_openai.generator import HttpGenerator, HttpLogprobGenerator

__all__ = [
    "BackendConfig",
    "HttpGenerator",
    "HttpLogprobGenerator",
    "OpenAIBackend",
    "OpenAIConfig",
    "RoleEndpoint",
]
