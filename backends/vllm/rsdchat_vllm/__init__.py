"""rsdchat backend: vLLM servers started, watched and stopped by rsdchat on this machine.

Registered in the entry-point group `rsdchat.backends` as `vllm` (`rsdchat_vllm.plugin`)
and, for reward models, as `vllm-qwen-prm`, `vllm-skywork-prm` and `vllm-orm` in
`rsdchat.rewards`. `Launcher` (`rsdchat_vllm.launcher`) runs one `vllm serve` child per
role; the requests go through the openai plugin's client (`rsdchat_openai`).
"""

from __future__ import annotations

from rsdchat_vllm.config import VllmConfig

__all__ = ["VllmConfig"]
