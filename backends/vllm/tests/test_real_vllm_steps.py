"""Where a step ends when vLLM itself stops at the step's stop strings (`include_stop_str_in_output`)."""

from __future__ import annotations

import pytest
from real_vllm import Server

from rsdchat.core.protocols import Backend
from rsdchat.core.types import Context, Message, Role, StepRequest
from rsdchat.plugins import load_backend
from rsdchat.settings import load_settings

SENTENCE = (". ", "? ", "! ", "\n")  # the chat's sentence steps (rsdchat.in_force.STEPS)


@pytest.fixture
async def backend(vllm_generator: Server, monkeypatch: pytest.MonkeyPatch) -> Backend:
    monkeypatch.delenv("RSDCHAT_CONFIG", raising=False)
    settings = load_settings(
        None, backend="openai", target_url=vllm_generator.url, target=vllm_generator.name
    )
    return load_backend("openai", settings.backends)


async def test_a_sentence_step_goes_on_past_a_list_number(backend: Backend, vllm_generator: Server) -> None:
    """vLLM stops at the ". " of "1. ": the step goes on to the end of the item's sentence."""
    generator = backend.generator(Role.TARGET, vllm_generator.name)
    question = "Give three numbered tips for learning a new language."
    context = Context((Message("user", question),), "Here are three tips:\n\n")
    try:
        step = await generator.generate(context, StepRequest(max_tokens=48, stop=SENTENCE))
    finally:
        await backend.aclose()
    assert step.text.startswith("1. ") and len(step.text) > len("1. ") + 3, step.text
    assert step.usage.generated_tokens > 2 and step.usage.prefill_tokens > 0
