"""Real vLLM servers for the tests (rsdchat_vllm.testing): vLLM's CPU build in `.venv-vllm` serving
checkpoints rebuilt from the packaged GGUF files, both made by the test command's set-up step.
Nothing here is a stand-in: the processes are `vllm serve`."""

from __future__ import annotations

from pathlib import Path

import pytest

from rsdchat_vllm.testing import SETUP, VENV_PYTHON, VLLM, VllmServer, built_checkpoint, free_port

__all__ = ["SETUP", "VENV_PYTHON", "VLLM", "Server", "checkpoint", "free_port"]
Server = VllmServer


def checkpoint(name: str) -> Path:
    """The built checkpoint `name`; skips the test (saying how to build it) where it is missing."""
    folder = built_checkpoint(name)
    if folder is None:
        pytest.skip(f"vLLM's CPU build or checkpoint {name} is not set up here: run `{SETUP}`")
    return folder
