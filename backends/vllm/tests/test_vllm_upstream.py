"""Against vLLM's own code, where it is installed (a GPU machine; skipped elsewhere):

- the `vllm serve` command lines the launcher writes parse with vLLM's own argument parser
  into the values meant;
- the requests rsdchat's client sends to a vLLM (completions streamed and with
  prompt_logprobs, tokenize/detokenize, pooling, classify, embeddings) validate against
  vLLM's own request models, with no field vLLM would ignore.

The requests are recorded here in any case (from a stub answering as vLLM does); only
the comparison needs vLLM.
"""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from rsdchat.plugins import RewardContext
from rsdchat.types import Context, Generation, Message, Role, StepRequest
from rsdchat_openai import OpenAIBackend, OpenAIConfig
from rsdchat_openai.rewards import OutcomeRM, QwenPRM, SkyworkPRM
from rsdchat_vllm.config import VllmConfig

URL = "http://vllm.test:8000"
MODEL = "Qwen/Qwen2.5-Math-1.5B-Instruct"
TOLERATED = {"activation"}  # sent for vLLM before `use_activation`; newer ones ignore it


def _first(*candidates: tuple[str, str]) -> Any:
    """The first of (module, name) that imports: vLLM moves things between releases."""
    for module, name in candidates:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"none of {candidates}")


def vllm_parser() -> argparse.ArgumentParser:
    pytest.importorskip("vllm", reason="vLLM is not installed here (it needs a GPU machine)")
    flexible = _first(
        ("vllm.utils.argparse_utils", "FlexibleArgumentParser"), ("vllm.utils", "FlexibleArgumentParser")
    )
    make = _first(
        ("vllm.entrypoints.common.cli_args", "make_arg_parser"),
        ("vllm.entrypoints.openai.cli_args", "make_arg_parser"),
    )
    parser = flexible()
    parser = make(parser)
    if not any(action.dest == "model_tag" for action in parser._actions):  # added by `serve` before 0.11
        parser.add_argument("model_tag", nargs="?")
    return parser  # type: ignore[no-any-return]


@pytest.mark.parametrize("role", list(Role))
def test_command_lines_parse_with_vllms_own_parser(role: Role) -> None:
    parser = vllm_parser()
    config = VllmConfig(
        target_tensor_parallel_size=2,
        sleep_mode=True,
        vllm_args="--dtype half",
        draft_vllm_args="--enforce-eager",
    )
    argv = config.argv(["vllm"], role, MODEL, 8123)
    assert argv[:2] == ["vllm", "serve"]
    args = parser.parse_args(argv[2:])
    assert args.model_tag == MODEL and args.port == 8123 and args.host == "127.0.0.1"
    assert args.served_model_name in ([MODEL], MODEL)
    assert args.max_model_len == 4096
    assert args.gpu_memory_utilization == pytest.approx(config.share(role))
    assert args.enable_sleep_mode is True and args.dtype == "half"
    assert args.tensor_parallel_size == (2 if role is Role.TARGET else 1)
    assert (args.runner == "pooling") is (role is Role.REWARD)
    assert args.enforce_eager is (role is Role.DRAFT)


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


def _request_model(path: str, body: dict[str, Any]) -> Any:
    openai = "vllm.entrypoints.openai.protocol"  # where every model lived before vLLM 0.11
    tokenize, pooling = "vllm.entrypoints.serve.tokenize.protocol", "vllm.entrypoints.pooling"
    chat = "messages" in body
    names = {
        "/v1/completions": ("vllm.entrypoints.openai.completion.protocol", "CompletionRequest"),
        "/tokenize": (tokenize, "TokenizeChatRequest" if chat else "TokenizeCompletionRequest"),
        "/detokenize": (tokenize, "DetokenizeRequest"),
        "/pooling": (f"{pooling}.pooling.protocol", "PoolingChatRequest"),
        "/classify": (f"{pooling}.classify.protocol", "ClassificationChatRequest"),
        "/v1/embeddings": (f"{pooling}.embed.protocol", "EmbeddingCompletionRequest"),
    }
    module, name = names[path]
    return _first((module, name), (openai, name))


async def test_requests_are_what_vllms_request_models_accept(httpx_mock: HTTPXMock) -> None:
    sent = await _requests(httpx_mock)
    paths = {path for path, _ in sent}
    assert {"/v1/completions", "/tokenize", "/detokenize", "/pooling", "/classify", "/v1/embeddings"} <= paths
    pytest.importorskip("vllm", reason="vLLM is not installed here (it needs a GPU machine)")
    for path, body in sent:
        if path == "/v1/models":
            continue
        model = _request_model(path, body)
        model.model_validate(body)
        known = set()
        for field_name, info in model.model_fields.items():
            known |= {field_name, info.alias} if info.alias else {field_name}
        assert set(body) - known <= TOLERATED, (path, set(body) - known)
