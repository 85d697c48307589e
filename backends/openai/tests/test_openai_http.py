"""HTTP behaviour of the openai backend with scripted answers (pytest-httpx): retries,
load sharing, error messages, stream handling, settings and templates."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openai_stubs import config
from pytest_httpx import HTTPXMock

from rsdchat.core.errors import BackendError, ConfigError
from rsdchat.core.types import Context, Message, Role, StepRequest
from rsdchat_openai import http
from rsdchat_openai.config import BackendConfig, RoleEndpoint
from rsdchat_openai.generator import HttpGenerator
from rsdchat_openai.http import Pool
from rsdchat_openai.wire import (
    CHATML,
    LLAMA_CPP_PYTHON,
    VLLM,
    Headers,
    ServerInfo,
    TemplateRenderer,
    choose_model,
    guess_params,
    load_template,
)

A, B = "http://a.test:8000", "http://b.test:8000"


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "BACKOFF", 0.0)


def pool(*urls: str, retries: int = 2, role: Role = Role.TARGET, key_env: str | None = None) -> Pool:
    endpoint = RoleEndpoint(
        role=role,
        urls=urls or (A,),
        retries=retries,
        api_key_env=key_env,
        connect_timeout=5.0,
        read_timeout=300.0,
    )
    return Pool(endpoint)


def sse(*events: dict[str, Any] | str) -> bytes:
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return "".join(lines).encode()


def chunk(text: str, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "object": "text_completion",
        "choices": [{"index": 0, "text": text, "finish_reason": finish, **extra}],
    }


def llama_generator(p: Pool, *, logprobs: bool = False) -> HttpGenerator:
    server = ServerInfo(LLAMA_CPP_PYTHON, ("m",))
    return HttpGenerator(p, server, "m", Headers(TemplateRenderer(CHATML)), logprobs=logprobs)


CONTEXT = Context((Message("user", "2+2?"),), "Step 1.\n\n")

# -- settings --------------------------------------------------------------------------


def test_urls_are_normalised_and_several_share_a_role() -> None:
    endpoints = BackendConfig.of(config(draft_url=f"{A}/v1/, {B}\n{A}", target_url=None))
    assert endpoints.endpoint(Role.DRAFT).urls == (A, B)
    with pytest.raises(ConfigError, match=r"setting target_url: .* \(--target-url"):
        endpoints.endpoint(Role.TARGET)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "draft_url",
            "gpu-box:8000",
            "setting [backends.openai] draft_url (flag): 'gpu-box:8000' is not an http",
        ),
        (
            "http_connect_timeout",
            -1.0,
            "setting [backends.openai] http_connect_timeout (flag): Input should be greater than 0",
        ),
        ("http_retries", -2, "setting [backends.openai] http_retries (flag)"),
    ],
)
def test_bad_settings_name_the_setting(field: str, value: object, message: str) -> None:
    from rsdchat.settings import load_settings

    with pytest.raises(ConfigError) as caught:
        load_settings(None, **{field: value})
    assert str(caught.value).startswith(message)


def test_defaults_are_declared_once() -> None:
    from rsdchat_openai import OpenAIConfig

    endpoints = BackendConfig.of(OpenAIConfig(draft_url=A))
    draft = endpoints.endpoint(Role.DRAFT)
    defaults = OpenAIConfig()
    assert (draft.connect_timeout, draft.read_timeout, draft.retries) == (
        defaults.http_connect_timeout,
        defaults.http_read_timeout,
        defaults.http_retries,
    )
    assert endpoints.draft_logprobs is True and endpoints.target is None


# -- retries, errors, load sharing -------------------------------------------------------


async def test_5xx_is_retried_then_answered(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{A}/tokenize", status_code=503, json={"detail": "loading"})
    httpx_mock.add_response(url=f"{A}/tokenize", json={"tokens": [1, 2]})
    p = pool()
    try:
        assert await p.post("/tokenize", {"prompt": "x"}) == {"tokens": [1, 2]}
    finally:
        await p.aclose()
    assert len(httpx_mock.get_requests()) == 2


async def test_retries_are_bounded_and_end_in_one_line(httpx_mock: HTTPXMock) -> None:
    for _ in range(3):
        httpx_mock.add_response(
            url=f"{A}/v1/completions", status_code=500, json={"error": {"message": "CUDA\nOOM"}}
        )
    p = pool(retries=2)
    with pytest.raises(BackendError) as caught:
        await p.post("/v1/completions", {})
    await p.aclose()
    assert str(caught.value) == f"target server {A}: HTTP 500: CUDA OOM after 3 attempts"


async def test_a_silent_server_is_reported_at_once_not_retried(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ReadTimeout("slow"), url=f"{A}/pooling")
    p = pool(retries=3)
    with pytest.raises(BackendError, match=rf"^target server {A}: silent for 300 s \(http_read_timeout\)$"):
        await p.post("/pooling", {})
    await p.aclose()
    assert len(httpx_mock.get_requests()) == 1  # waiting that long again would only make it worse


async def test_a_replica_that_refuses_is_skipped(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ConnectError("[Errno 111] Connection refused"), url=f"{A}/tokenize")
    httpx_mock.add_response(url=f"{B}/tokenize", json={"tokens": []})
    p = pool(A, B)
    p._turn = -1  # the first pick goes to A
    try:
        assert await p.post("/tokenize", {}) == {"tokens": []}
    finally:
        await p.aclose()


def test_requests_go_to_the_replica_with_fewest_in_flight() -> None:
    p = pool(A, B, "http://c.test:8000")
    p.replicas[0].in_flight, p.replicas[1].in_flight, p.replicas[2].in_flight = 2, 0, 1
    assert p._pick(set()).url == B
    p.replicas[1].in_flight = 2
    assert p._pick(set()).url == "http://c.test:8000"
    p.replicas[2].in_flight = 2
    assert {p._pick(set()).url for _ in range(3)} == {A, B, "http://c.test:8000"}  # ties take turns
    assert p._pick({A, B}).url == "http://c.test:8000"  # not one that just failed


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        (400, {"error": {"message": "maximum context length is 4096 tokens"}}, BackendError, "HTTP 400"),
        (404, {"detail": "Not Found"}, BackendError, "has no /v1/completions"),
        (401, {"detail": "Invalid API key"}, ConfigError, "set target_api_key_env"),
    ],
)
async def test_client_errors_are_not_retried(
    httpx_mock: HTTPXMock, status: int, body: dict[str, Any], error: type[Exception], message: str
) -> None:
    httpx_mock.add_response(url=f"{A}/v1/completions", status_code=status, json=body)
    p = pool()
    with pytest.raises(error, match=message):
        await p.post("/v1/completions", {})
    await p.aclose()


async def test_a_malformed_answer_is_a_clear_error(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{A}/tokenize", text="<html>gateway</html>")
    p = pool()
    with pytest.raises(BackendError, match=r"malformed answer to /tokenize \(not JSON\)"):
        await p.post("/tokenize", {})
    await p.aclose()


async def test_the_key_is_sent_but_never_shown(
    httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_KEY", "s3cr3t")
    httpx_mock.add_response(url=f"{A}/v1/models", json={"data": []})
    p = pool(key_env="MY_KEY")
    await p.get("/v1/models")
    await p.aclose()
    assert httpx_mock.get_requests()[0].headers["Authorization"] == "Bearer s3cr3t"
    assert "s3cr3t" not in repr(p)


# -- streams -------------------------------------------------------------------------------


async def test_the_client_stops_at_the_delimiter(httpx_mock: HTTPXMock) -> None:
    body = sse(
        chunk("Step"), chunk(" two.\n"), chunk("\nStep 3"), chunk(" more"), chunk("", "length"), "[DONE]"
    )
    httpx_mock.add_response(url=f"{A}/v1/completions", content=body)
    httpx_mock.add_response(url=f"{A}/extras/tokenize/count", json={"count": 17})
    pieces: list[str] = []
    generator = llama_generator(pool())
    step = await generator.generate(CONTEXT, StepRequest(max_tokens=32, seed=7), pieces.append)
    await generator.pool.aclose()
    assert (step.text, step.finish_reason) == ("Step two.\n\n", "step")
    assert "".join(pieces) == step.text
    assert (step.usage.prefill_tokens, step.usage.generated_tokens) == (17, 3)
    sent = json.loads(httpx_mock.get_requests()[0].content)
    assert sent["prompt"] == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\nStep 1.\n\n"
    assert "stop" not in sent and sent["repeat_penalty"] == 1.0 and sent["seed"] == 7


@pytest.mark.parametrize("includes_stop", [True, False])
async def test_a_step_goes_on_past_a_list_number_where_the_server_stopped(
    httpx_mock: HTTPXMock, includes_stop: bool
) -> None:
    """vLLM stops at the ". " of "1. " itself (a sentence stop): that is no step end, so the step
    goes on in a second request from "1. " (written back if the server left it out); usage adds up."""
    usage = {"prompt_tokens": 20, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 0}}
    first = sse(chunk("1" + ". " * includes_stop, "stop", stop_reason=". "), {"choices": [], "usage": usage})
    later = usage | {"prompt_tokens": 22, "prompt_tokens_details": {"cached_tokens": 20}}  # prefix cached
    second = sse(
        chunk("Learn"), chunk(" words. ", "stop", stop_reason=". "),
        {"choices": [], "usage": later},
    )  # fmt: skip
    httpx_mock.add_response(url=f"{A}/v1/completions", content=first)
    httpx_mock.add_response(url=f"{A}/v1/completions", content=second)
    pieces: list[str] = []
    server = ServerInfo(VLLM, ("m",))
    generator = HttpGenerator(pool(), server, "m", Headers(TemplateRenderer(CHATML)), logprobs=False)
    stops = (". ", "? ", "! ", "\n")
    step = await generator.generate(CONTEXT, StepRequest(max_tokens=32, stop=stops), pieces.append)
    await generator.pool.aclose()
    assert (step.text, step.finish_reason) == ("1. Learn words.", "step")
    assert "".join(pieces) == step.text
    assert (step.usage.prefill_tokens, step.usage.generated_tokens) == (20 + 2, 2 + 2)
    sent = [json.loads(r.content) for r in httpx_mock.get_requests()]
    assert sent[1]["prompt"] == sent[0]["prompt"] + "1. " and sent[1]["max_tokens"] < 32


async def test_each_piece_is_handed_on_before_the_server_sends_the_next(httpx_mock: HTTPXMock) -> None:
    """Tokens stream: the server sends its second piece only once the first has reached on_token
    (a client that waited for the whole reply would never get it)."""
    handed = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield sse(chunk("Step"))
        await asyncio.wait_for(handed.wait(), timeout=60)  # a guard against a hang
        yield sse(chunk(" two.\n\n"), chunk("", "stop"), "[DONE]")

    httpx_mock.add_callback(lambda request: httpx.Response(200, content=body()), url=f"{A}/v1/completions")
    httpx_mock.add_response(url=f"{A}/extras/tokenize/count", json={"count": 17})
    pieces: list[str] = []

    def on_token(piece: str) -> None:
        pieces.append(piece)
        handed.set()

    generator = llama_generator(pool())
    step = await generator.generate(CONTEXT, StepRequest(max_tokens=32), on_token)
    await generator.pool.aclose()
    assert pieces[0] == "Step" and "".join(pieces) == step.text == "Step two.\n\n"


@pytest.mark.parametrize(("finish", "expected", "tokens"), [("stop", "eos", 3), ("length", "length", 2)])
async def test_eos_and_length(httpx_mock: HTTPXMock, finish: str, expected: str, tokens: int) -> None:
    httpx_mock.add_response(
        url=f"{A}/v1/completions", content=sse(chunk("x = "), chunk("4"), chunk("", finish))
    )
    httpx_mock.add_response(url=f"{A}/extras/tokenize/count", json={"count": 9})
    generator = llama_generator(pool())
    step = await generator.generate(CONTEXT, StepRequest(max_tokens=2))
    await generator.pool.aclose()
    assert (step.text, step.finish_reason, step.usage.generated_tokens) == ("x = 4", expected, tokens)


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ((chunk("Step"), "[DONE]"), "ended without a finish reason"),
        ((chunk("Step"),), "ended without a finish reason"),
        ((chunk("Ste"), {"error": {"message": "engine died", "code": 500}}), "engine died"),
        (("{not json",), "malformed stream event"),
        (({"choices": [{"text": 5}]},), "malformed stream chunk"),
    ],
)
async def test_truncated_or_malformed_streams(
    httpx_mock: HTTPXMock, events: tuple[Any, ...], message: str
) -> None:
    httpx_mock.add_response(url=f"{A}/v1/completions", content=sse(*events))
    generator = llama_generator(pool(role=Role.DRAFT))
    with pytest.raises(BackendError, match=message) as caught:
        await generator.generate(CONTEXT, StepRequest(max_tokens=8))
    await generator.pool.aclose()
    assert str(caught.value).startswith("draft server")


async def test_a_stream_that_fails_before_its_first_event_is_retried(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{A}/v1/completions", status_code=502, text="bad gateway")
    httpx_mock.add_response(url=f"{A}/v1/completions", content=sse(chunk("ok", "stop")))
    httpx_mock.add_response(url=f"{A}/extras/tokenize/count", json={"count": 3})
    generator = llama_generator(pool())
    step = await generator.generate(CONTEXT, StepRequest(max_tokens=8))
    await generator.pool.aclose()
    assert (step.text, step.finish_reason) == ("ok", "eos")


# -- templates and names -------------------------------------------------------------------


async def test_chat_templates(tmp_path: Any) -> None:
    messages = (Message("system", "Be brief."), Message("user", "Hi"))
    chatml = await TemplateRenderer(load_template("chatml")).header(messages)
    assert (
        chatml
        == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}>")
    assert await TemplateRenderer(load_template(str(path))).header(messages) == "[system]Be brief.[user]Hi>"
    with pytest.raises(ConfigError, match="setting chat_template"):
        load_template("no-such-template.jinja")
    with pytest.raises(ConfigError, match="setting chat_template: not a valid Jinja template"):
        TemplateRenderer("{% for %}")


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("Qwen/Qwen2.5-Math-7B-Instruct", 7_000_000_000),
        ("qwen2.5-coder-1.5b", 1_500_000_000),
        ("smollm2-135m", 135_000_000),
        ("Skywork/Skywork-Reward-Llama-3.1-8B-v0.2", 8_000_000_000),
        ("smollm2", 0),
    ],
)
def test_parameter_counts_from_model_names(name: str, params: int) -> None:
    assert guess_params(name) == params


def test_one_url_and_key_for_every_role_with_per_role_ones_winning(monkeypatch: pytest.MonkeyPatch) -> None:
    from rsdchat_openai import OpenAIConfig

    monkeypatch.setenv("OPENAI_BASE_URL", f"{A}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789abcdefghij")
    endpoints = BackendConfig.of(OpenAIConfig(target_url=B))  # OPENAI_BASE_URL read when settings are
    draft, target = endpoints.endpoint(Role.DRAFT), endpoints.endpoint(Role.TARGET)
    assert (draft.urls, target.urls) == ((A,), (B,))  # the role's own URL wins
    assert draft.api_key_env == "OPENAI_API_KEY"  # the OpenAI clients' pair, for OPENAI_BASE_URL's server
    assert target.api_key_env is None  # an OpenAI key is never sent to a server named apart
    both = BackendConfig.of(OpenAIConfig(base_url=B, api_key_env="MINE", draft_api_key_env="DRAFT_KEY"))
    assert both.endpoint(Role.TARGET).urls == (B,) and both.endpoint(Role.TARGET).api_key_env == "MINE"
    assert both.endpoint(Role.DRAFT).api_key_env == "DRAFT_KEY"
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(ConfigError, match=r"--base-url for every role, or \$OPENAI_BASE_URL"):
        BackendConfig.of(OpenAIConfig()).endpoint(Role.DRAFT)


@pytest.mark.parametrize(("role", "flag"), [(Role.TARGET, "--target"), (Role.REWARD, "--reward-model")])
def test_a_model_not_served_names_the_flag_that_picks_it(role: Role, flag: str) -> None:
    served = ServerInfo(LLAMA_CPP_PYTHON, ("a", "b"))
    with pytest.raises(ConfigError, match=f"it serves: a, b\\); pass {flag} with one of those names"):
        choose_model(served, "x", pool(A, role=role), A)


@pytest.mark.parametrize(
    ("given", "count"),
    [
        ("1.5B", 1_500_000_000),
        ("500M", 500_000_000),
        (" 135m ", 135_000_000),
        ("7e9", 7_000_000_000),
        (7_000_000_000, 7_000_000_000),
        ("135_000_000", 135_000_000),
        ("2k", 2_000),
    ],
)
def test_a_roles_parameter_count_is_a_setting(given: object, count: int) -> None:
    from rsdchat_openai import OpenAIConfig

    settings = OpenAIConfig(target_params=given)
    assert settings.params(Role.TARGET) == count
    assert settings.params(Role.DRAFT) is None and settings.params(Role.REWARD) is None  # unset: not known


@pytest.mark.parametrize("given", ["7X", "1.5", "0", "-3", "nan", "seven", True, 1e20])
def test_a_parameter_count_that_is_not_one_is_refused(given: object) -> None:
    from rsdchat_openai import OpenAIConfig

    with pytest.raises(ValueError, match=r"give the model's parameter count, like 1\.5B, 500M or 135000000"):
        OpenAIConfig(draft_params=given)


async def test_a_reward_model_is_sized_by_its_setting_else_its_name_else_unknown(
    httpx_mock: HTTPXMock,
) -> None:
    from rsdchat.plugins import RewardContext
    from rsdchat_openai.rewards import QwenPRM

    prm = "http://prm.test:8001"
    for served, setting, expected in [
        ("Qwen/Qwen2.5-Math-PRM-7B", None, 7_000_000_000),  # from the name
        ("Qwen/Qwen2.5-Math-PRM-7B", "1.5B", 1_500_000_000),  # the setting wins
        ("/ckpt/qwen-prm", None, 0),  # neither: unknown (the ledger shows it so, never as free)
    ]:
        httpx_mock.add_response(url=f"{prm}/v1/models", json={"data": [{"id": served, "owned_by": "vllm"}]})
        context = RewardContext(None, None, {"openai": config(reward_url=prm, reward_params=setting)})
        reward = QwenPRM(context)
        assert reward.n_params == expected
        await reward.aclose()


def test_a_served_model_is_sized_by_its_setting_else_its_name_else_unknown(httpx_mock: HTTPXMock) -> None:
    from rsdchat_openai import OpenAIBackend

    httpx_mock.add_response(url=f"{A}/v1/models", json={"data": [{"id": "smol", "owned_by": "vllm"}]})
    httpx_mock.add_response(url=f"{B}/v1/models", json={"data": [{"id": "smol", "owned_by": "vllm"}]})
    backend = OpenAIBackend(config(draft_url=A, target_url=B, target_params="1.7B"))
    assert backend.generator(Role.TARGET, "smol").info.n_params == 1_700_000_000
    assert backend.generator(Role.DRAFT, "smol").info.n_params == 0  # unknown: the ledger says so
