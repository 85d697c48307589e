"""Settings stubs and constants shared by the openai backend's tests."""

from __future__ import annotations

from dataclasses import dataclass

from rsdchat.engine import Mode

API_KEY_ENV = "RSDCHAT_TEST_SERVER_KEY"
API_KEY = "loopback-test-key-4711"  # a throwaway key for the test server, never a real secret


@dataclass
class StubSettings:
    """The fields the openai backend, its rewards and the doctor read (see OpenAISettings)."""

    draft: str = "smollm2"
    target: str = "smollm2"
    reward: str = "arithmetic"
    backend: str = "openai"
    mode: Mode = Mode.RSD
    step_delimiter: str = "\n\n"
    draft_url: str | None = None
    target_url: str | None = None
    reward_url: str | None = None
    reward_model: str | None = None
    draft_api_key_env: str | None = None
    target_api_key_env: str | None = None
    reward_api_key_env: str | None = None
    http_connect_timeout: float = 2.0
    http_read_timeout: float = 120.0
    http_retries: int = 2
    chat_template: str | None = None
    draft_logprobs: bool = True
