"""What each process reward model reads, and Skywork's PRM refused on a vLLM it cannot run on.

Replayed answers (pytest-httpx) shaped as vLLM gives them: /version (`{"version": …}`), /tokenize
(`TokenizeResponse`), /v1/embeddings (`EmbeddingResponse`) and /pooling (`PoolingResponse`).
Token ids are Qwen2.5's (Skywork-o1-Open-PRM's tokenizer): "\\n\\n" is the one token 271.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from openai_stubs import config
from pytest_httpx import HTTPXMock

from rsdchat.core.errors import BackendError, ConfigError
from rsdchat.core.types import Context, Generation, Message
from rsdchat.plugins import RewardContext
from rsdchat_openai import http
from rsdchat_openai.rewards import QwenPRM, SkyworkPRM

PRM, PRM_2 = "http://prm.test:8001", "http://prm-2.test:8001"
SKYWORK = "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B"
CARD_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
CONTEXT = Context(
    (Message("system", "You are a terse tutor."), Message("user", "What is 2+3?")), "We add the numbers.\n\n"
)
STEP = Generation("2 + 3 = 5.\n\n", "step")


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "BACKOFF", 0.0)


def models(name: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "owned_by": "vllm", "max_model_len": 4096}],
    }


def reward_context(*urls: str) -> RewardContext:
    return RewardContext(None, None, {"openai": config(reward_url=",".join(urls or (PRM,)), http_retries=0)})


def usage(prompt: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "total_tokens": prompt, "completion_tokens": 0}


def embeddings(values: list[float]) -> dict[str, Any]:
    embedding = {"index": 0, "object": "embedding", "embedding": values}
    return {
        "id": "embd-1",
        "object": "list",
        "created": 1,
        "model": SKYWORK,
        "data": [embedding],
        "usage": usage(9),
    }


def tokenize(httpx_mock: HTTPXMock, pieces: dict[str, list[int]]) -> None:
    for text, ids in pieces.items():
        httpx_mock.add_response(
            url=f"{PRM}/tokenize",
            json={"count": len(ids), "max_model_len": 4096, "tokens": ids},
            match_json={"model": SKYWORK, "prompt": text, "add_special_tokens": False},
        )


# -- qwen-prm -------------------------------------------------------------------------------------


async def test_qwen_prm_reads_the_model_cards_system_prompt_and_the_steps(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{PRM}/v1/models", json=models("Qwen/Qwen2.5-Math-PRM-7B"))
    prm = QwenPRM(reward_context())
    rows = {"index": 0, "object": "pooling", "data": [[0.1, 0.9], [0.3, 0.7]]}
    answer = {
        "id": "pool-1",
        "object": "list",
        "created": 1,
        "model": "m",
        "data": [rows],
        "usage": usage(70),
    }
    httpx_mock.add_response(url=f"{PRM}/pooling", json=answer)
    earlier = (Message("user", "What is 1+1?"), Message("assistant", "2"))
    chat = Context((CONTEXT.messages[0], *earlier, CONTEXT.messages[1]), CONTEXT.response)
    score = await prm.score(chat, STEP)
    await prm.aclose()
    assert score.reward == pytest.approx(0.7)
    sent = json.loads(httpx_mock.get_requests(url=f"{PRM}/pooling")[0].content)["messages"]
    assert sent == [
        {"role": "system", "content": CARD_SYSTEM},  # the card's, not the conversation's
        {"role": "user", "content": "What is 1+1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": "We add the numbers.<extra_0>2 + 3 = 5.<extra_0>"},
    ]


# -- skywork-prm ----------------------------------------------------------------------------------


async def test_skywork_prm_ends_each_step_with_the_reference_step_token(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{PRM}/v1/models", json=models(SKYWORK))
    httpx_mock.add_response(url=f"{PRM}/version", json={"version": "0.6.4.post1"})
    prm = SkyworkPRM(reward_context())
    question = [151643, 3838, 374, 220, 17, 10, 18, 30, 198]  # <|endoftext|>What is 2+3?\n
    step_1, step_2 = [1654, 912, 279, 5109, 13], [17, 488, 220, 18, 284, 220, 20, 13]
    tokenize(
        httpx_mock,
        {
            "\n\n": [271],
            "<|endoftext|>What is 2+3?\n": question,
            "We add the numbers.": step_1,
            "2 + 3 = 5.": step_2,
        },
    )
    expected = [*question, *step_1, 271, *step_2, 271]
    httpx_mock.add_response(url=f"{PRM}/v1/embeddings", json=embeddings([0.0] * (len(expected) - 1) + [2.0]))
    score = await prm.score(CONTEXT, STEP)
    await prm.aclose()
    assert score.reward == pytest.approx(1 / (1 + math.exp(-2.0)))
    sent = json.loads(httpx_mock.get_requests(url=f"{PRM}/v1/embeddings")[0].content)
    assert sent["input"] == expected and sent["model"] == SKYWORK


@pytest.mark.parametrize("version", ["0.32.0", "0.10.1.1", "0.7.0"])
def test_skywork_prm_refuses_a_vllm_its_plugin_cannot_run_on_at_start(
    httpx_mock: HTTPXMock, version: str
) -> None:
    httpx_mock.add_response(url=f"{PRM}/v1/models", json=models(SKYWORK))
    httpx_mock.add_response(url=f"{PRM}/version", json={"version": version})
    with pytest.raises(ConfigError) as caught:
        SkyworkPRM(reward_context())
    message = str(caught.value)
    assert message.startswith(
        f"reward server {PRM} runs vLLM {version}: skywork-prm needs vLLM 0.6.4.post1 (0.6.x)"
    )
    assert "skywork-o1-prm-inference" in message and "use qwen-prm or orm" in message and "\n" not in message
    assert not httpx_mock.get_requests(url=f"{PRM}/v1/embeddings")  # refused before any scoring


def test_every_replica_of_the_reward_server_must_run_a_vllm_skywork_can_use(httpx_mock: HTTPXMock) -> None:
    for url, version in ((PRM, "0.6.4.post1"), (PRM_2, "0.11.0")):
        httpx_mock.add_response(url=f"{url}/v1/models", json=models(SKYWORK))
        httpx_mock.add_response(url=f"{url}/version", json={"version": version})
    with pytest.raises(ConfigError, match=f"reward server {PRM_2} runs vLLM 0.11.0: "):
        SkyworkPRM(reward_context(PRM, PRM_2))


async def test_skywork_prm_refuses_one_vector_per_sequence_in_one_line(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{PRM}/v1/models", json=models(SKYWORK))
    httpx_mock.add_response(url=f"{PRM}/version", status_code=404, json={"detail": "Not Found"})  # not vLLM
    prm = SkyworkPRM(reward_context())  # nothing said about the version: the answer's shape decides
    httpx_mock.add_response(
        url=f"{PRM}/tokenize", json={"count": 1, "max_model_len": 4096, "tokens": [7]}, is_reusable=True
    )
    httpx_mock.add_response(url=f"{PRM}/v1/embeddings", json=embeddings([0.1] * 1536))  # a pooled vector
    with pytest.raises(BackendError) as caught:
        await prm.score(CONTEXT, STEP)
    await prm.aclose()
    message = str(caught.value)
    assert "/v1/embeddings gave 1536 values for 5 tokens, not one per token" in message
    assert "needs vLLM 0.6.4.post1 (0.6.x) with Skywork's skywork-o1-prm-inference plugin" in message
    assert "\n" not in message
