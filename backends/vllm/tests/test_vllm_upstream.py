"""Against vLLM's own code, run in vLLM's own environment (.venv-vllm, its CPU build here):

- the `vllm serve` command lines the launcher writes parse with vLLM's own argument parser
  into the values meant;
- the requests rsdchat's client sends to a vLLM (completions streamed and with
  prompt_logprobs, tokenize/detokenize, pooling, classify, embeddings) validate against
  vLLM's own request models, with no field vLLM would ignore.

The requests are recorded here (from a stub answering as vLLM does); vllm_side.py judges them
with vLLM's code. The servers themselves are tested in test_real_vllm_*.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock
from real_vllm import SETUP, VENV_PYTHON

from rsdchat.core.types import Context, Generation, Message, Role, StepRequest
from rsdchat.plugins import RewardContext
from rsdchat_openai import OpenAIBackend, OpenAIConfig
from rsdchat_openai.rewards import OutcomeRM, QwenPRM, SkyworkPRM
from rsdchat_vllm.config import VllmConfig

URL = "http://vllm.test:8000"
MODEL = "Qwen/Qwen2.5-Math-1.5B-Instruct"
HERE = Path(__file__).resolve().parent
TOLERATED = {"activation"}  # sent for vLLM before `use_activation`; newer ones ignore it


def vllm_side(asked: dict[str, Any]) -> dict[str, Any]:
    """vLLM's own parser or request models, run in vLLM's environment (vllm_side.py)."""
    python = VENV_PYTHON
    if not python.is_file():
        pytest.skip(f"vLLM's CPU build is not set up here: run `{SETUP}`")
    done = subprocess.run(
        [str(python), str(HERE / "vllm_side.py")],
        input=json.dumps(asked),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


@pytest.mark.parametrize("role", list(Role))
def test_command_lines_parse_with_vllms_own_parser(role: Role) -> None:
    config = VllmConfig(
        device="gpu",
        target_tensor_parallel_size=2,
        sleep_mode=True,
        vllm_args="--dtype half",
        draft_vllm_args="--enforce-eager",
    )
    argv = config.argv(["vllm"], role, MODEL, 8123)
    assert argv[:2] == ["vllm", "serve"]
    args = SimpleNamespace(**vllm_side({"argv": argv[2:]})["args"])
    assert args.model_tag == MODEL and args.port == 8123 and args.host == "127.0.0.1"
    assert args.served_model_name in ([MODEL], MODEL)
    assert args.max_model_len == 4096
    assert args.gpu_memory_utilization == pytest.approx(config.share(role))
    assert args.enable_sleep_mode is True and args.dtype == "half"
    assert args.tensor_parallel_size == (2 if role is Role.TARGET else 1)
    assert (args.runner == "pooling") is (role is Role.REWARD)
    assert args.enforce_eager is (role is Role.DRAFT)


@pytest.mark.parametrize("role", list(Role))
def test_command_lines_on_the_cpu_parse_with_vllms_own_parser(role: Role) -> None:
    config = VllmConfig(device="cpu", target_vllm_args="--dtype float32 --no-enforce-eager")
    argv = config.argv(["vllm"], role, MODEL, 8123)
    args = SimpleNamespace(**vllm_side({"argv": argv[2:]})["args"])
    assert "--gpu-memory-utilization" not in argv and args.model_tag == MODEL
    assert args.dtype == ("float32" if role is Role.TARGET else "bfloat16")
    assert args.enforce_eager is (role is not Role.TARGET)
    assert (args.runner == "pooling") is (role is Role.REWARD)


# -- requests -----------------------------------------------------------------------------------


def _vllm(httpx_mock: HTTPXMock, sent: list[tuple[str, dict[str, Any]]]) -> None:
    """Answer every path as vLLM would (shapes only), and record what was sent."""

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        path = request.url.path
        sent.append((path, body))
        usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        if path == "/v1/models":
            cards = [{"id": MODEL, "object": "model", "owned_by": "vllm", "max_model_len": 4096}]
            return httpx.Response(200, json={"object": "list", "data": cards})
        if path == "/tokenize":
            return httpx.Response(200, json={"tokens": [1, 2, 3], "count": 3, "max_model_len": 4096})
        if path == "/detokenize":
            return httpx.Response(200, json={"prompt": "<|im_start|>user\nWhat is 2+3?<|im_end|>\n"})
        if path == "/v1/completions" and body.get("stream"):
            chunks = [{"choices": [{"index": 0, "text": "2 + 3 = 5.\n\n", "finish_reason": "stop"}]}]
            chunks.append({"choices": [], "usage": usage})
            events = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            return httpx.Response(200, text=events, headers={"content-type": "text/event-stream"})
        if path == "/v1/completions":  # prompt_logprobs: the first entry null, then id -> logprob
            entries = [None, {"2": {"logprob": -0.1}}, {"3": {"logprob": -0.2}}, {"4": {"logprob": -0.3}}]
            return httpx.Response(
                200, json={"choices": [{"text": "", "prompt_logprobs": entries}], "usage": usage}
            )
        if path == "/pooling":
            return httpx.Response(200, json={"data": [{"index": 0, "data": [[0.2, 0.8]]}], "usage": usage})
        if path == "/classify":
            return httpx.Response(
                200, json={"data": [{"index": 0, "probs": [1.5], "num_classes": 1}], "usage": usage}
            )
        if path == "/v1/embeddings":
            values = [0.5] * len(body["input"])
            return httpx.Response(200, json={"data": [{"index": 0, "embedding": values}], "usage": usage})
        return httpx.Response(404, json={"error": {"message": f"no {path}"}})

    httpx_mock.add_callback(answer, is_reusable=True)


async def _requests(httpx_mock: HTTPXMock) -> list[tuple[str, dict[str, Any]]]:
    sent: list[tuple[str, dict[str, Any]]] = []
    _vllm(httpx_mock, sent)
    context = Context((Message("system", "Reason step by step."), Message("user", "What is 2+3?")))
    backend = OpenAIBackend(OpenAIConfig(base_url=None, draft_url=URL))
    try:
        draft = backend.generator(Role.DRAFT, MODEL)
        step = await draft.generate(context, StepRequest(max_tokens=32, seed=1))
        assert step.text == "2 + 3 = 5.\n\n"
        assert hasattr(draft, "logprobs")
        scored = await draft.logprobs(context, "5")
        assert scored.token_logprobs == (-0.3,)
    finally:
        await backend.aclose()
    rewards = RewardContext(None, None, {"openai": OpenAIConfig(base_url=None, reward_url=URL)})
    for kind in (QwenPRM, SkyworkPRM, OutcomeRM):
        reward = kind(rewards)
        try:
            await reward.score(context, Generation("2 + 3 = 5.\n\n", "step"))
        finally:
            await reward.aclose()
    return sent


async def test_requests_are_what_vllms_request_models_accept(httpx_mock: HTTPXMock) -> None:
    sent = await _requests(httpx_mock)
    paths = {path for path, _ in sent}
    assert {"/v1/completions", "/tokenize", "/detokenize", "/pooling", "/classify", "/v1/embeddings"} <= paths
    bodies = [[path, body] for path, body in sent if path not in ("/v1/models", "/version")]  # GETs
    checked = vllm_side({"requests": bodies})
    for result in checked["results"]:
        assert result["error"] is None, result
        assert set(result["unknown"]) <= TOLERATED, result
