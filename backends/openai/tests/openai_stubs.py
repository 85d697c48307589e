"""Settings and constants shared by the openai backend's tests."""

from __future__ import annotations

from typing import Any

from rsdchat.settings import Settings
from rsdchat_openai import OpenAIConfig

API_KEY_ENV = "RSDCHAT_TEST_SERVER_KEY"
API_KEY = "loopback-test-key-4711"  # a throwaway key for the test server, never a real secret
MODEL = "smollm2"  # the alias the test server serves


def config(**fields: Any) -> OpenAIConfig:
    """The openai plugin's settings, with timeouts that suit a loopback test server."""
    return OpenAIConfig(**{"http_connect_timeout": 2.0, "http_read_timeout": 120.0, **fields})


def full_settings(backend: OpenAIConfig, **fields: Any) -> Settings:
    """rsdchat's settings with draft and target on the test server(s) of `backend`."""
    core = {"backend": "openai", "draft": MODEL, "target": MODEL, "reward": "arithmetic", **fields}
    return Settings(**core).with_backends({"openai": backend})
