"""One end-to-end solve with the real Qwen2.5-Coder pair, each model on its own
llama-cpp-python server (0.5B draft, 1.5B target), as a deployment would run them."""

from __future__ import annotations

import pytest
from openai_stubs import config

from rsdchat.core.engine import Engine
from rsdchat.core.policy import Policy
from rsdchat.core.types import Message, Role
from rsdchat.core.weighting import make_weighting
from rsdchat.plugins import RewardContext
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat.rewards import make_reward
from rsdchat_openai import OpenAIBackend
from rsdchat_openai.testing import LlamaServer, server_available

pytestmark = pytest.mark.slow


async def test_qwen_pair_solves_a_question_on_two_servers() -> None:
    models = pytest.importorskip("rsdchat_llamacpp.embedded")
    if not server_available():
        pytest.skip("llama-cpp-python[server] not installed")
    try:
        draft_path = models.resolve_model("qwen2.5-coder-0.5b")
        target_path = models.resolve_model("qwen2.5-coder-1.5b")
    except models.ModelError as exc:
        pytest.skip(str(exc))
    question = "A shop sells pencils at 3 dollars each. Ana buys 4 pencils. How many dollars does she pay?"
    with (
        LlamaServer(draft_path, alias="qwen2.5-coder-0.5b", n_ctx=4096) as draft_server,
        LlamaServer(target_path, alias="qwen2.5-coder-1.5b", n_ctx=4096) as target_server,
    ):
        settings = config(
            draft_url=draft_server.url,
            target_url=target_server.url,
            draft_logprobs=False,  # llama-cpp-python sorts the 152k vocabulary per token for them
        )
        backend = OpenAIBackend(settings)
        try:
            draft = backend.generator(Role.DRAFT, "qwen2.5-coder-0.5b")
            target = backend.generator(Role.TARGET, "qwen2.5-coder-1.5b")
            engine = Engine(draft=draft, target=target)
            policy = Policy(
                reward=make_reward("arithmetic", RewardContext(draft, target, {})),
                weighting=make_weighting("constant", p=0.5),
                max_steps=8,
                max_step_tokens=96,
                max_tokens=320,
            )
            trace = await engine.solve(
                (Message("system", MATH_SYSTEM_PROMPT), Message("user", question)), policy, seed=3
            )
        finally:
            await backend.aclose()
    assert trace.error is None, trace.error
    assert {step.author for step in trace.steps} == {Role.DRAFT, Role.TARGET}
    assert trace.finish_reason in ("answer", "eos", "max_tokens", "max_steps")
    assert draft.info.n_params == 500_000_000 and target.info.n_params == 1_500_000_000
    assert trace.ledger.flops > 0
    if trace.finish_reason == "answer":
        assert "12" in trace.text
