"""`rsdchat serve`'s app with scripted models, served by uvicorn on loopback in the test's event loop:
the shapes and provenance, admission (429), a slow reader, a client that leaves, a backend that
fails, draining, the API key, the body limit and /metrics. (test_serve_real.py runs SmolLM2.)
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from chat_helpers import DRAFT, TARGET, make_runtime, wait_until
from serve_helpers import CHAT, USER, Live, assert_error, events, metric, parse_metrics, serving

from rsdchat.core.errors import BackendError, ContextFull
from rsdchat.core.types import Context, Generation, StepRequest
from rsdchat.serve.answering import Limits
from rsdchat.testing import ScriptedModel, steps_so_far

ANSWER = "Step one: 2+2=4.\n\nStep two, done right.\n\nSo the answer is \\boxed{4}.\n\n"


class Gated:
    """A scripted model that waits for `gate` before writing step `at` and every later one."""

    def __init__(self, script: Sequence[str] = DRAFT, *, at: int = 0, name: str = "tiny-draft") -> None:
        self.model = ScriptedModel(script, name=name)
        self.info, self.features = self.model.info, self.model.features
        self.at = at
        self.gate = asyncio.Event()
        self.waiting = 0  # calls waiting at the gate now
        self.cancelled = 0  # calls cancelled while waiting

    async def generate(self, context: Context, request: StepRequest, on_token: Any = None) -> Generation:
        if steps_so_far(context) >= self.at:
            self.waiting += 1
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.waiting -= 1
        return await self.model.generate(context, request, on_token)

    async def logprobs(self, context: Context, continuation: str) -> Any:
        return await self.model.logprobs(context, continuation)


def failing_at(step: int, error: Exception) -> ScriptedModel:
    """A draft that writes steps until `step`, where its backend raises `error`."""

    def script(context: Context, request: StepRequest) -> str:
        done = steps_so_far(context)
        if done == step:
            raise error
        return f"Step {done}: fine.\n\n"

    return ScriptedModel(script, name="tiny-draft")


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "rsd", "messages": USER} | fields


async def stream(client: httpx.AsyncClient, path: str = CHAT, **fields: Any) -> list[Any]:
    """The events of a streamed answer, read to the end."""
    async with client.stream("POST", path, json=body(stream=True, **fields)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return events([line async for line in response.aiter_lines()])


async def metrics(client: httpx.AsyncClient) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return parse_metrics(response.text)


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    async with serving(make_runtime()) as served:
        yield served


@pytest.fixture
async def client(live: Live) -> AsyncIterator[httpx.AsyncClient]:
    async with live.client(timeout=30) as opened:
        yield opened


# -- shapes and provenance ---------------------------------------------------------------------


async def test_a_whole_chat_answer_with_every_steps_provenance(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=body())
    assert response.status_code == 200
    reply = response.json()
    assert reply["object"] == "chat.completion" and reply["model"] == "rsd"
    assert reply["id"].startswith("chatcmpl-")
    (choice,) = reply["choices"]
    assert choice["message"] == {"role": "assistant", "content": ANSWER}
    assert choice["finish_reason"] == "stop"
    steps = reply["rsd"]["steps"]
    assert [(s["step"], s["author"], s["accepted"], s["reward"]) for s in steps] == [
        (0, "draft", True, 0.9),
        (1, "draft", False, 0.2),
        (1, "target", True, None),
        (2, "draft", True, 0.9),
    ]
    assert "".join(s["text"] for s in steps if s["accepted"]) == ANSWER
    assert all(s["delta"] == 0.7 for s in steps)
    assert (reply["rsd"]["accepted_drafts"], reply["rsd"]["judged_drafts"]) == (2, 3)
    assert reply["rsd"]["mode"] == "rsd" and reply["rsd"]["weighting"] == {"name": "binary", "delta": 0.7}
    usage = reply["usage"]
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["rsd"]["roles"]["target"]["generated_tokens"] > 0


async def test_a_streamed_chat_answer_step_by_step(client: httpx.AsyncClient) -> None:
    found = await stream(client, stream_options={"include_usage": True})
    assert found[-1] == "[DONE]"
    chunks = found[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    steps = [c for c in chunks if "rsd" in c]
    shape = [(c["rsd"]["step"], c["rsd"]["author"], c["rsd"]["accepted"]) for c in steps]
    assert shape == [(0, "draft", True), (1, "draft", False), (1, "target", True), (2, "draft", True)]
    for chunk in steps:  # content only with an accepted step; a rejected draft carries its text in rsd
        delta = chunk["choices"][0]["delta"]
        assert ("content" in delta) == chunk["rsd"]["accepted"]
        assert ("text" in chunk["rsd"]) == (not chunk["rsd"]["accepted"])
    assert steps[1]["rsd"]["text"] == DRAFT[1]
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert (
        content
        == ANSWER
        == "".join(c["choices"][0]["delta"]["content"] for c in steps if c["rsd"]["accepted"])
    )
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


async def test_a_completion_whole_and_streamed(client: httpx.AsyncClient) -> None:
    prompt = {"model": "rsd", "prompt": "What is 2+2?"}
    response = await client.post("/v1/completions", json=prompt)
    assert response.status_code == 200
    reply = response.json()
    assert reply["object"] == "text_completion" and reply["id"].startswith("cmpl-")
    assert reply["choices"][0]["text"] == ANSWER and len(reply["rsd"]["steps"]) == 4
    async with client.stream("POST", "/v1/completions", json=prompt | {"stream": True}) as streamed:
        found = events([line async for line in streamed.aiter_lines()])
    assert found[-1] == "[DONE]"
    assert {c["object"] for c in found[:-1]} == {"text_completion"}
    assert "".join(c["choices"][0]["text"] for c in found[:-1]) == ANSWER


async def test_the_served_models(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    assert [m["id"] for m in response.json()["data"]] == ["rsd", "rsd-target-only", "rsd-draft-only"]


async def test_a_request_sets_delta_and_the_model_sets_the_mode(client: httpx.AsyncClient) -> None:
    everything = (await client.post(CHAT, json=body(rsd={"delta": 0.0}))).json()["rsd"]
    assert everything["weighting"]["delta"] == 0.0
    assert [(s["author"], s["accepted"]) for s in everything["steps"]] == [("draft", True)] * 3
    nothing = (await client.post(CHAT, json=body(rsd={"delta": 1.0}))).json()["rsd"]
    assert [s["author"] for s in nothing["steps"] if s["accepted"]] == ["target"] * 3
    target = (await client.post(CHAT, json=body(model="rsd-target-only"))).json()
    assert {s["author"] for s in target["rsd"]["steps"]} == {"target"}
    assert target["choices"][0]["message"]["content"] == "".join(TARGET)
    refused = assert_error(await client.post(CHAT, json=body(rsd={"delta": 0.5, "bogus": 1})), 400)
    assert "rsd.bogus" in refused["message"]
    outside = assert_error(await client.post(CHAT, json=body(rsd={"delta": 1.5})), 400)
    assert "delta" in outside["message"] and "outside the range" in outside["message"]


async def test_a_stop_string_ends_the_answer_and_the_writing() -> None:
    draft = Gated(at=1)  # writes step 0, then waits: the stop string is seen before step 1 is written
    async with serving(make_runtime(draft=draft)) as live, live.client(timeout=30) as client:
        reply = (await client.post(CHAT, json=body(stop=["2=4"]))).json()
        assert reply["choices"][0] == {
            "index": 0,
            "message": {"role": "assistant", "content": "Step one: 2+"},
            "logprobs": None,
            "finish_reason": "stop",
        }
        assert draft.cancelled == 1  # the rest is not written
    draft = Gated(at=2)
    async with serving(make_runtime(draft=draft)) as live, live.client(timeout=30) as client:
        found = await stream(client, stop="two, done")  # in the target's step 1
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in found[:-1] if c["choices"])
        assert text == "Step one: 2+2=4.\n\nStep "
        assert found[-2]["choices"][0]["finish_reason"] == "stop" and found[-1] == "[DONE]"
        assert draft.cancelled == 1  # step 2 is never drafted


# -- admission ---------------------------------------------------------------------------------


async def test_past_the_queue_a_request_gets_429_with_retry_after() -> None:
    draft = Gated()
    runtime = make_runtime(draft=draft)
    async with (
        serving(runtime, Limits(max_running=1, max_waiting=0)) as live,
        live.client(timeout=30) as client,
    ):
        first = asyncio.ensure_future(client.post(CHAT, json=body()))
        await wait_until(lambda: draft.waiting == 1, timeout=30)
        assert live.server.metrics.running == 1
        refused = await client.post(CHAT, json=body())
        error = assert_error(refused, 429)
        assert refused.headers["retry-after"] == "1"
        assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
        draft.gate.set()
        assert (await asyncio.wait_for(first, 30)).status_code == 200
        assert (await client.post(CHAT, json=body())).status_code == 200
        counted = await metrics(client)
        assert metric(counted, 'rsdchat_requests_total{model="rsd",status="429"}') == 1


async def test_a_request_waits_for_a_slot_within_the_queue() -> None:
    draft = Gated()
    runtime = make_runtime(draft=draft)
    async with (
        serving(runtime, Limits(max_running=1, max_waiting=1)) as live,
        live.client(timeout=30) as client,
    ):
        first = asyncio.ensure_future(client.post(CHAT, json=body()))
        await wait_until(lambda: draft.waiting == 1, timeout=30)
        second = asyncio.ensure_future(client.post(CHAT, json=body()))
        await wait_until(lambda: live.server.metrics.waiting == 1, timeout=30)
        assert_error(await client.post(CHAT, json=body()), 429)
        draft.gate.set()
        done = await asyncio.wait_for(asyncio.gather(first, second), 30)
        assert [r.status_code for r in done] == [200, 200]
        assert (live.server.metrics.running, live.server.metrics.waiting) == (0, 0)


async def test_a_streamed_request_hears_at_once_while_it_waits_and_may_leave() -> None:
    draft = Gated()
    runtime = make_runtime(draft=draft)
    async with (
        serving(runtime, Limits(max_running=1, max_waiting=1)) as live,
        live.client(timeout=30) as client,
    ):
        first = asyncio.ensure_future(client.post(CHAT, json=body()))
        await wait_until(lambda: draft.waiting == 1, timeout=30)
        async with client.stream("POST", CHAT, json=body(stream=True)) as waiting:
            async for line in waiting.aiter_lines():
                if line.startswith("data:"):
                    assert events([line])[0]["choices"][0]["delta"]["role"] == "assistant"
                    break  # its first chunk came while it waits for the running slot
            assert live.server.metrics.waiting == 1
        await wait_until(lambda: live.server.metrics.waiting == 0, timeout=30)  # it left the line
        second = asyncio.ensure_future(client.post(CHAT, json=body()))  # so there is room again
        await wait_until(lambda: live.server.metrics.waiting == 1, timeout=30)
        draft.gate.set()
        done = await asyncio.wait_for(asyncio.gather(first, second), 30)
        assert [r.status_code for r in done] == [200, 200]
        assert (live.server.metrics.running, live.server.metrics.waiting) == (0, 0)


# -- clients that leave or do not read ---------------------------------------------------------


async def test_a_client_that_closes_its_stream_cancels_the_answer() -> None:
    draft = Gated(at=1)
    async with serving(make_runtime(draft=draft)) as live, live.client(timeout=30) as client:
        async with client.stream("POST", CHAT, json=body(stream=True)) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:") and '"content": "Step one' in line:
                    break  # the first step; then the client goes away
        await wait_until(lambda: draft.cancelled == 1, timeout=30)  # the model stops writing
        await wait_until(lambda: live.server.metrics.running == 0, timeout=30)
        assert draft.waiting == 0
        assert live.server.metrics.requests == {("rsd", 499): 1}  # as a whole answer the client left
        draft.gate.set()
        assert (await client.post(CHAT, json=body())).status_code == 200


async def test_a_client_that_gives_up_on_a_whole_answer_cancels_it() -> None:
    draft = Gated()
    async with serving(make_runtime(draft=draft)) as live:
        async with live.client(timeout=httpx.Timeout(30, read=0.5)) as impatient:
            with pytest.raises(httpx.ReadTimeout):
                await impatient.post(CHAT, json=body())
        await wait_until(lambda: draft.cancelled == 1, timeout=30)
        await wait_until(lambda: live.server.metrics.running == 0, timeout=30)
        assert live.server.metrics.requests[("rsd", 499)] == 1
        draft.gate.set()
        async with live.client(timeout=30) as client:
            assert (await client.post(CHAT, json=body())).status_code == 200


async def test_a_stream_nobody_reads_is_ended_and_others_are_served() -> None:
    def huge(context: Context, request: StepRequest) -> str:
        return "x" * 200_000 + "\n\n"  # one token: 500 steps are far more than the socket buffers hold

    draft = ScriptedModel(huge, name="tiny-draft", delay=0.01)
    runtime = make_runtime(draft=draft, max_steps=500, max_tokens=500)
    async with serving(runtime, Limits(send_timeout=0.3)) as live:
        loop = asyncio.get_running_loop()
        with socket.socket() as reader:  # asks, then never reads
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader.setblocking(False)
            await loop.sock_connect(reader, ("127.0.0.1", int(live.url.rpartition(":")[2])))
            data = json.dumps(body(model="rsd-draft-only", stream=True)).encode()
            head = f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            await loop.sock_sendall(
                reader, head.encode() + f"Content-Length: {len(data)}\r\n\r\n".encode() + data
            )
            await wait_until(lambda: draft.calls != [], timeout=30)
            await wait_until(lambda: live.server.metrics.running == 0, timeout=60)  # the server gave up
            async with live.client(timeout=30) as client:
                other = await client.post(CHAT, json=body(model="rsd-target-only"))
                assert other.status_code == 200
        assert len(draft.calls) < 500  # it stopped writing for the reader that did not read
        assert live.server.metrics.requests[("rsd-draft-only", 499)] == 1


# -- failures ----------------------------------------------------------------------------------


async def test_a_backend_failing_midway_ends_the_stream_with_an_error_then_done() -> None:
    runtime = make_runtime(draft=failing_at(2, BackendError("the backend broke")))
    async with serving(runtime) as live, live.client(timeout=30) as client:
        found = await stream(client)
        assert found[-1] == "[DONE]"
        assert found[-2] == {
            "error": {
                "message": "the backend broke",
                "type": "server_error",
                "param": None,
                "code": "server_error",
            }
        }
        texts = [c["choices"][0]["delta"].get("content") for c in found[1:-2]]
        assert texts == ["Step 0: fine.\n\n", "Step 1: fine.\n\n"]
        whole = await client.post(CHAT, json=body())
        error = assert_error(whole, 500)
        assert (error["message"], error["type"], error["code"]) == (
            "the backend broke",
            "server_error",
            "server_error",
        )
        counted = await metrics(client)
        assert metric(counted, 'rsdchat_requests_total{model="rsd",status="500"}') == 2
        assert live.server.metrics.running == 0


async def test_a_conversation_past_the_context_is_a_400_or_an_error_event() -> None:
    full = ContextFull("the conversation (5000 tokens) fills the context of tiny-draft (512 tokens)")
    async with serving(make_runtime(draft=failing_at(0, full))) as live, live.client(timeout=30) as client:
        error = assert_error(await client.post(CHAT, json=body()), 400)
        assert error["code"] == "context_length_exceeded" and "fills the context" in error["message"]
        found = await stream(client)
        assert found[-1] == "[DONE]" and found[-2]["error"]["code"] == "context_length_exceeded"


async def test_draining_refuses_new_requests_and_ends_the_running_ones() -> None:
    draft = Gated(at=1)
    async with serving(make_runtime(draft=draft)) as live, live.client(timeout=30) as client:
        found: list[Any] = []
        async with client.stream("POST", CHAT, json=body(stream=True)) as response:
            lines = response.aiter_lines()
            async for line in lines:
                found += events([line])
                if found and "rsd" in found[-1]:
                    break  # the first step is out; the second waits at the gate
            drain = asyncio.ensure_future(live.server.drain(grace=0.2))
            await wait_until(lambda: live.server.draining, timeout=30)
            refused = await client.post(CHAT, json=body())
            assert assert_error(refused, 503)["message"] == "the server is shutting down"
            assert refused.headers["retry-after"] == "1"
            assert (await client.get("/health")).status_code == 503
            found += events([line async for line in lines])
        await asyncio.wait_for(drain, 30)
        assert found[-1] == "[DONE]"
        assert found[-2]["error"]["code"] == "server_shutdown"
        assert draft.cancelled == 1


async def test_draining_lets_an_answer_finish_within_the_grace() -> None:
    draft = Gated(at=1)
    async with serving(make_runtime(draft=draft)) as live, live.client(timeout=30) as client:
        async with client.stream("POST", CHAT, json=body(stream=True)) as response:
            lines = response.aiter_lines()
            async for line in lines:
                if '"content": "Step one' in line:
                    break
            drain = asyncio.ensure_future(live.server.drain(grace=600))
            await wait_until(lambda: live.server.draining, timeout=30)
            draft.gate.set()
            found = events([line async for line in lines])
        await asyncio.wait_for(drain, 30)  # done once the answer is, not after the grace
        assert found[-1] == "[DONE]" and found[-2]["choices"][0]["finish_reason"] == "stop"


# -- the HTTP surface --------------------------------------------------------------------------


async def test_the_body_limit_and_bad_json() -> None:
    async with (
        serving(make_runtime(), Limits(max_body_bytes=2048)) as small,
        small.client(timeout=30) as client,
    ):
        big = body(messages=[{"role": "user", "content": "x" * 5000}])
        assert "2048 bytes" in assert_error(await client.post(CHAT, json=big), 413)["message"]

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            for _ in range(10):
                yield b" " * 1000

        assert_error(await client.post(CHAT, content=chunked()), 413)
        assert (
            "not JSON" in assert_error(await client.post(CHAT, content=b'{"model": "rsd",'), 400)["message"]
        )
        assert "not JSON" in assert_error(await client.post(CHAT, content=b"\xff\xfe"), 400)["message"]
        assert (await client.post(CHAT, json=body())).status_code == 200


async def test_unknown_endpoints_and_methods_are_json_errors(client: httpx.AsyncClient) -> None:
    assert "/v1/nothing" in assert_error(await client.get("/v1/nothing"), 404)["message"]
    assert "GET" in assert_error(await client.get(CHAT), 405)["message"]
    assert_error(await client.post("/v1/models"), 405)


async def test_the_api_key() -> None:
    async with (
        serving(make_runtime(), Limits(api_key="s3cret-key")) as live,
        live.client(timeout=30) as client,
    ):
        for method, path in (("POST", CHAT), ("GET", "/v1/models"), ("GET", "/metrics")):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"}):
                response = await client.request(method, path, json=body(), headers=headers)
                assert assert_error(response, 401)["type"] == "authentication_error"
                assert "s3cret-key" not in response.text
        assert (await client.get("/health")).json()["status"] == "ok"
        good = {"Authorization": "bearer s3cret-key"}
        assert (await client.post(CHAT, json=body(), headers=good)).status_code == 200
        assert (await client.get("/metrics", headers=good)).status_code == 200


async def test_metrics_count_requests_by_status_and_steps(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok", "running": 0, "waiting": 0}
    await client.post(CHAT, json=body())
    await stream(client)
    await client.post(CHAT, json=body(model="nope"))
    await client.post(CHAT, json=body(n=2))
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    counted = parse_metrics(response.text)
    assert metric(counted, 'rsdchat_requests_total{model="rsd",status="200"}') == 2
    assert metric(counted, 'rsdchat_requests_total{model="-",status="404"}') == 1
    assert metric(counted, 'rsdchat_requests_total{model="-",status="400"}') == 1  # no model yet
    steps = {
        kind: metric(counted, f'rsdchat_steps_total{{kind="{kind}"}}') for kind in ("drafted", "accepted")
    }
    assert steps == {"drafted": 6, "accepted": 4}
    assert metric(counted, 'rsdchat_steps_total{kind="rewritten"}') == 2
    assert metric(counted, 'rsdchat_tokens_total{role="target",kind="generated"}') > 0
    assert (
        metric(counted, "rsdchat_requests_running") == 0 and metric(counted, "rsdchat_requests_waiting") == 0
    )
    assert metric(counted, "rsdchat_request_seconds_count") == 2
    assert metric(counted, 'rsdchat_request_seconds_bucket{le="+Inf"}') == 2
