"""CONTRACT TESTS against vLLM's documented request/response shapes — no vLLM runs here.

vLLM needs a GPU, so these tests replay answers shaped exactly like vLLM's own
documentation and protocol classes, and check what the backend sends and how it
reads the answers:

- /v1/models: `ModelCard` (owned_by "vllm", max_model_len) — vllm/entrypoints/openai/protocol.py
- /v1/completions stream: `CompletionStreamResponse` chunks, `stop_reason`, the final
  usage chunk with `choices: []` (stream_options.include_usage), `UsageInfo` with
  `prompt_tokens_details.cached_tokens`; `include_stop_str_in_output` — same file
- prompt_logprobs: `CompletionResponseChoice.prompt_logprobs`, a list whose first entry
  is null and whose others map token id -> {logprob, rank, decoded_token} — same file
- /tokenize (`TokenizeResponse`: count, max_model_len, tokens) and /detokenize
  (`DetokenizeResponse`: prompt)
- /pooling (`PoolingResponse`: data[i].object "pooling", data[i].data) for
  Qwen2.5-Math-PRM (docs/models/pooling_models/reward.md: process reward models,
  task "token_classify"; STEP pooling gives one 2-class row per `<extra_0>`)
- /classify (`ClassificationResponse`: data[i].probs, num_classes), from the example
  in docs/models/pooling_models/classify.md
- Skywork's PRM (/version, /v1/embeddings on vLLM 0.6.x with its plugin) is in test_prm_inputs.py

`scripts/check_vllm_contract.py` runs the same code paths against a real vLLM.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from openai_stubs import config
from pytest_httpx import HTTPXMock

from rsdchat.core.errors import BackendError, ConfigError
from rsdchat.core.protocols import LogprobModel
from rsdchat.core.types import Context, Generation, Message, Role, StepRequest
from rsdchat.plugins import RewardContext
from rsdchat_openai import OpenAIBackend, http
from rsdchat_openai.rewards import OutcomeRM, QwenPRM

GEN, PRM = "http://gen.test:8000", "http://prm.test:8001"
SYSTEM = Message("system", "Please reason step by step, and put your final answer within \\boxed{}.")
CONTEXT = Context((SYSTEM, Message("user", "What is 2+3?")), "We add the numbers.\n\n")
HEADER = (
    "<|im_start|>system\n...<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
)
HEADER_IDS = [151644, 8948, 198, 151645, 198, 151644, 872, 198, 151645, 198, 151644, 77091, 198]


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "BACKOFF", 0.0)


def models(*names: str) -> dict[str, Any]:
    """A /v1/models answer as vLLM's ModelCard serialises it."""
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": 1745383065,
                "owned_by": "vllm",
                "root": f"/models/{name}",
                "parent": None,
                "max_model_len": 4096,
                "permission": [],
            }
            for name in names
        ],
    }


def usage(prompt: int, completion: int = 0, cached: int | None = None) -> dict[str, Any]:
    details = None if cached is None else {"cached_tokens": cached}
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": details,
    }


def stream(*events: dict[str, Any]) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def text_chunk(
    text: str, logprob: float, finish: str | None = None, stop_reason: object = None
) -> dict[str, Any]:
    """A CompletionStreamResponse chunk with logprobs=0 (only the sampled token)."""
    return {
        "id": "cmpl-3f1d",
        "object": "text_completion",
        "created": 1745383065,
        "model": "draft",
        "choices": [
            {
                "index": 0,
                "text": text,
                "logprobs": {
                    "text_offset": [0],
                    "token_logprobs": [logprob],
                    "tokens": [text],
                    "top_logprobs": [{text: logprob}],
                },
                "finish_reason": finish,
                "stop_reason": stop_reason,
            }
        ],
        "usage": None,
    }


def usage_chunk(prompt: int, completion: int, cached: int | None) -> dict[str, Any]:
    return {
        "id": "cmpl-3f1d",
        "object": "text_completion",
        "created": 1745383065,
        "model": "draft",
        "choices": [],
        "usage": usage(prompt, completion, cached),
    }


def render_header(httpx_mock: HTTPXMock) -> None:
    """The server renders the chat header: /tokenize(messages) -> /detokenize -> /tokenize(text)."""
    tokenize = {"count": len(HEADER_IDS), "max_model_len": 4096, "tokens": HEADER_IDS, "token_strs": None}
    httpx_mock.add_response(url=f"{GEN}/tokenize", json=tokenize, match_json=_messages_request())
    httpx_mock.add_response(url=f"{GEN}/detokenize", json={"prompt": HEADER})
    httpx_mock.add_response(
        url=f"{GEN}/tokenize",
        json=tokenize,
        match_json={"model": "draft", "prompt": HEADER, "add_special_tokens": False},
    )


def _messages_request() -> dict[str, Any]:
    chat = [{"role": m.role, "content": m.content} for m in CONTEXT.messages]
    return {"model": "draft", "messages": chat, "add_generation_prompt": True}


async def vllm_generator(httpx_mock: HTTPXMock, **settings: Any) -> Any:
    httpx_mock.add_response(url=f"{GEN}/v1/models", json=models("draft"))
    backend = OpenAIBackend(config(draft_url=f"{GEN}/v1", **settings))
    return backend, backend.generator(Role.DRAFT, "draft")


async def test_vllm_step_is_streamed_and_stops_on_the_server(httpx_mock: HTTPXMock) -> None:
    backend, draft = await vllm_generator(httpx_mock)
    render_header(httpx_mock)
    httpx_mock.add_response(
        url=f"{GEN}/v1/completions",
        content=stream(
            text_chunk("So", -0.1),
            text_chunk(" 2+3 = 5.", -0.2),
            text_chunk("\n\n", -0.3, "stop", "\n\n"),
            usage_chunk(prompt=40, completion=3, cached=32),
        ),
    )
    pieces: list[str] = []
    step = await draft.generate(CONTEXT, StepRequest(max_tokens=64, seed=3), pieces.append)
    await backend.aclose()
    assert (step.text, step.finish_reason) == ("So 2+3 = 5.\n\n", "step")
    assert pieces == ["So", " 2+3 = 5.", "\n\n"]
    assert step.token_logprobs == (-0.1, -0.2, -0.3)
    assert (step.usage.prefill_tokens, step.usage.generated_tokens) == (8, 3)  # 40 prompt, 32 from cache
    sent = json.loads(httpx_mock.get_requests(url=f"{GEN}/v1/completions")[0].content)
    assert sent == {
        "model": "draft",
        "prompt": HEADER + CONTEXT.response,
        "max_tokens": 64,
        "temperature": 0.0,
        "top_p": 1.0,
        "stream": True,
        "include_stop_str_in_output": True,
        "add_special_tokens": False,
        "seed": 3,
        "stop": ["\n\n"],
        "stream_options": {"include_usage": True},
        "logprobs": 0,
    }


@pytest.mark.parametrize(
    ("finish", "stop_reason", "expected"),
    [("stop", None, "eos"), ("stop", 151645, "eos"), ("length", None, "length"), ("stop", "\n\n", "step")],
)
async def test_vllm_finish_reasons(
    httpx_mock: HTTPXMock, finish: str, stop_reason: object, expected: str
) -> None:
    backend, draft = await vllm_generator(httpx_mock, draft_logprobs=False)
    render_header(httpx_mock)
    httpx_mock.add_response(
        url=f"{GEN}/v1/completions",
        content=stream(text_chunk("The answer is 5.", -0.1, finish, stop_reason), usage_chunk(40, 5, None)),
    )
    step = await draft.generate(CONTEXT, StepRequest(max_tokens=5))
    await backend.aclose()
    assert step.finish_reason == expected
    assert step.token_logprobs is None  # not asked for
    assert step.text.endswith("\n\n") == (expected == "step")


@pytest.mark.parametrize(
    "said",
    [
        "max_tokens must be at least 1, got 0",  # max_tokens clamped to what the context has left
        "This model's maximum context length is 4096 tokens. However, your request has 4096 input "
        "tokens. Please reduce the length of the input messages.",
    ],
)
async def test_a_prompt_that_fills_the_context_is_said_so(httpx_mock: HTTPXMock, said: str) -> None:
    """Issue 23, row 20: the answer ended with vLLM's "max_tokens must be at least 1, got 0"."""
    backend, draft = await vllm_generator(httpx_mock, draft_logprobs=False)
    render_header(httpx_mock)
    error = {"error": {"message": said, "type": "BadRequestError", "param": None, "code": 400}}
    httpx_mock.add_response(url=f"{GEN}/v1/completions", status_code=400, json=error)
    with pytest.raises(BackendError) as caught:
        await draft.generate(CONTEXT, StepRequest(max_tokens=48))
    await backend.aclose()
    assert str(caught.value) == (
        "the conversation fills the draft's context (4096 tokens): start a new chat"
        " or serve the model with a longer context"
    )


async def test_vllm_prompt_logprobs_score_the_continuation(httpx_mock: HTTPXMock) -> None:
    backend, target = await vllm_generator(httpx_mock)
    assert isinstance(target, LogprobModel)
    render_header(httpx_mock)
    prefix_ids = [*HEADER_IDS, 1654, 912, 279, 5109, 382]  # header + "We add the numbers.\n\n"
    continuation = [17, 10, 18, 284, 220, 20]  # "2+3 = 5"
    httpx_mock.add_response(
        url=f"{GEN}/tokenize",
        json={"count": len(prefix_ids), "max_model_len": 4096, "tokens": prefix_ids},
        match_json={"model": "draft", "prompt": HEADER + CONTEXT.response, "add_special_tokens": False},
    )
    entries: list[Any] = [None]
    for i, token in enumerate([*prefix_ids, *continuation][1:]):
        entries.append({str(token): {"logprob": -0.5 - i / 100, "rank": 1, "decoded_token": "t"}})
    answer = {
        "id": "cmpl-9",
        "object": "text_completion",
        "created": 1745383065,
        "model": "draft",
        "choices": [
            {
                "index": 0,
                "text": "\n",
                "logprobs": None,
                "finish_reason": "length",
                "prompt_logprobs": entries,
            }
        ],
        "usage": usage(len(prefix_ids) + 6, 1, cached=len(prefix_ids)),
    }
    httpx_mock.add_response(url=f"{GEN}/v1/completions", json=answer)
    scored = await target.logprobs(CONTEXT, "2+3 = 5")
    await backend.aclose()
    assert len(scored.token_logprobs) == len(continuation)
    assert scored.token_logprobs[0] == pytest.approx(-0.5 - (len(prefix_ids) - 1) / 100)
    assert (scored.usage.prefill_tokens, scored.usage.generated_tokens) == (6, 1)
    sent = json.loads(httpx_mock.get_requests(url=f"{GEN}/v1/completions")[0].content)
    assert sent["prompt_logprobs"] == 0 and sent["max_tokens"] == 1 and sent["add_special_tokens"] is False


async def test_a_header_that_does_not_survive_detokenization_is_a_config_error(httpx_mock: HTTPXMock) -> None:
    backend, draft = await vllm_generator(httpx_mock)
    tokenize = {"count": 3, "max_model_len": 4096, "tokens": [1, 2, 3]}
    httpx_mock.add_response(url=f"{GEN}/tokenize", json=tokenize, match_json=_messages_request())
    httpx_mock.add_response(url=f"{GEN}/detokenize", json={"prompt": "<s>[INST] What is 2+3? [/INST]"})
    httpx_mock.add_response(url=f"{GEN}/tokenize", json={**tokenize, "tokens": [1, 1, 2, 3]})
    with pytest.raises(ConfigError, match="set chat_template"):
        await draft.generate(CONTEXT, StepRequest(max_tokens=5))
    await backend.aclose()


# -- reward models -----------------------------------------------------------------------------


def reward_settings(**extra: Any) -> RewardContext:
    """What a reward plugin is given: no local models, the openai plugin's settings."""
    return RewardContext(None, None, {"openai": config(reward_url=PRM, **extra)})


def pooling(rows: list[Any], prompt_tokens: int) -> dict[str, Any]:
    return {
        "id": "pool-1c2b",
        "object": "list",
        "created": 1745383065,
        "model": "Qwen/Qwen2.5-Math-PRM-7B",
        "data": [{"index": 0, "object": "pooling", "data": rows}],
        "usage": usage(prompt_tokens),
    }


DRAFT_STEP = Generation("2 + 3 = 5.\n\n", "step")


async def test_qwen_prm_reads_the_positive_class_at_the_last_step_tag(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{PRM}/v1/models", json=models("Qwen/Qwen2.5-Math-PRM-7B"))
    prm = QwenPRM(reward_settings())  # the only served model is used
    httpx_mock.add_response(url=f"{PRM}/pooling", json=pooling([[0.02, 0.98], [0.35, 0.65]], 61))
    score = await prm.score(CONTEXT, DRAFT_STEP)
    await prm.aclose()
    assert score.reward == pytest.approx(0.65) and score.usage.prefill_tokens == 61
    assert (prm.n_params, prm.kind, prm.default_delta) == (7_000_000_000, "process", 0.7)
    sent = json.loads(httpx_mock.get_requests(url=f"{PRM}/pooling")[0].content)
    assert sent["messages"][:2] == [{"role": m.role, "content": m.content} for m in CONTEXT.messages]
    assert sent["messages"][2] == {
        "role": "assistant",
        "content": "We add the numbers.<extra_0>2 + 3 = 5.<extra_0>",
    }
    assert sent["task"] == "token_classify" and sent["add_generation_prompt"] is False


async def test_qwen_prm_with_one_row_per_token_finds_the_tags(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{PRM}/v1/models", json=models("prm"))
    prm = QwenPRM(reward_settings())
    tokens = [151644, 8948, 151651, 17, 151651, 151645]  # two <extra_0> (151651)
    logits = [[0.0, 0.0]] * 4 + [[1.0, 3.0], [0.0, 0.0]]  # raw logits: softmax here
    httpx_mock.add_response(url=f"{PRM}/pooling", json=pooling(logits, len(tokens)))
    httpx_mock.add_response(
        url=f"{PRM}/tokenize", json={"count": 1, "max_model_len": 4096, "tokens": [151651]}
    )
    httpx_mock.add_response(url=f"{PRM}/tokenize", json={"count": 6, "max_model_len": 4096, "tokens": tokens})
    score = await prm.score(CONTEXT, DRAFT_STEP)
    await prm.aclose()
    assert score.reward == pytest.approx(1 / (1 + math.exp(-2.0)))


async def test_a_vllm_without_pooling_tasks_is_asked_again_without_one(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{PRM}/v1/models", json=models("prm"))
    prm = QwenPRM(reward_settings())
    error = {
        "error": {"message": "Unsupported task: 'token_classify'", "type": "BadRequestError", "code": 400}
    }
    httpx_mock.add_response(url=f"{PRM}/pooling", status_code=400, json=error)
    httpx_mock.add_response(url=f"{PRM}/pooling", json=pooling([[0.5, 0.5], [0.1, 0.9]], 40))
    score = await prm.score(CONTEXT, DRAFT_STEP)
    await prm.aclose()
    assert score.reward == pytest.approx(0.9)
    assert "task" not in json.loads(httpx_mock.get_requests(url=f"{PRM}/pooling")[1].content)


@pytest.mark.parametrize(
    ("status", "answer", "message"),
    [
        (404, {"detail": "Not Found"}, r"has no /pooling .*--runner pooling"),
        (200, pooling([[0.1] * 8], 40), r"gave 1 rows for 2 steps; is it a process reward model\?"),
        (200, pooling([[0.1, 0.2, 0.7], [0.1, 0.2, 0.7]], 40), "rows are not 2-class"),
    ],
)
async def test_a_reward_endpoint_that_is_not_a_prm_is_a_clear_error(
    httpx_mock: HTTPXMock, status: int, answer: dict[str, Any], message: str
) -> None:
    httpx_mock.add_response(url=f"{PRM}/v1/models", json=models("e5"))
    prm = QwenPRM(reward_settings())
    httpx_mock.add_response(url=f"{PRM}/pooling", status_code=status, json=answer)
    with pytest.raises(BackendError, match=message):
        await prm.score(CONTEXT, DRAFT_STEP)
    await prm.aclose()


def test_the_reward_model_must_be_named_when_several_are_served(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{PRM}/v1/models", json=models("prm-a", "prm-b"))
    with pytest.raises(ConfigError, match=r"setting reward_model: .* serves prm-a, prm-b"):
        QwenPRM(reward_settings())


async def test_orm_scores_the_whole_reply_unbounded(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{PRM}/v1/models", json=models("Skywork-Reward-Llama-3.1-8B-v0.2"))
    orm = OutcomeRM(reward_settings())
    answer = {
        "id": "classify-7c87",
        "object": "list",
        "created": 1745383065,
        "model": "Skywork-Reward-Llama-3.1-8B-v0.2",
        "data": [{"index": 0, "label": "LABEL_0", "probs": [-3.25], "num_classes": 1}],
        "usage": usage(88),
    }
    httpx_mock.add_response(url=f"{PRM}/classify", json=answer)
    score = await orm.score(CONTEXT, DRAFT_STEP)
    await orm.aclose()
    assert score.reward == -3.25 and (orm.kind, orm.default_delta) == ("outcome", 0.0)
    sent = json.loads(httpx_mock.get_requests(url=f"{PRM}/classify")[0].content)
    assert sent["messages"][-1] == {"role": "assistant", "content": "We add the numbers.\n\n2 + 3 = 5."}
    assert sent["use_activation"] is False


async def test_orm_rejects_a_classifier_with_several_classes(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{PRM}/v1/models", json=models("jason9693/Qwen2.5-1.5B-apeach"))
    orm = OutcomeRM(reward_settings())
    answer = {  # the example answer of vLLM's /classify documentation
        "id": "classify-9bf17f2847b046c7b2d5495f4b4f9682",
        "object": "list",
        "created": 1745383213,
        "model": "jason9693/Qwen2.5-1.5B-apeach",
        "data": [
            {
                "index": 0,
                "label": "Default",
                "probs": [0.565970778465271, 0.4340292513370514],
                "num_classes": 2,
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "total_tokens": 10,
            "completion_tokens": 0,
            "prompt_tokens_details": None,
        },
    }
    httpx_mock.add_response(url=f"{PRM}/classify", json=answer)
    with pytest.raises(BackendError, match="an outcome reward model gives one score"):
        await orm.score(CONTEXT, DRAFT_STEP)
    await orm.aclose()


async def test_reward_diagnosis(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{PRM}/v1/models", json=models("prm"))
    prm = QwenPRM(reward_settings())
    httpx_mock.add_response(url=f"{PRM}/pooling", json=pooling([[0.1, 0.9]], 30))
    check = await prm.diagnose()
    await prm.aclose()
    assert check.ok and check.reward_api and check.role == "reward" and check.location == PRM
