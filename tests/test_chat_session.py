"""The chat's logic on `ChatSession` directly (no Textual), with scripted models and rewards.

A test listens to the session's events the way the chat app does, and reads the
transcript it keeps; `tests/test_tui.py` checks that the app draws those events.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from chat_helpers import DRAFT, TARGET, BlackBox, Chat, make_runtime, open_chat, shape, wait_until

from rsdchat.chat.choice import Choice
from rsdchat.chat.events import (
    BackendSaid,
    EngineUpdate,
    Loading,
    NoteShown,
    TurnFinished,
    TurnStarted,
)
from rsdchat.core.errors import BackendError, ConfigError
from rsdchat.core.events import StepScored
from rsdchat.core.policy import Mode
from rsdchat.core.types import Context, Generation, Role, StepRequest
from rsdchat.progress import PROGRESS, progress_to
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat.runtime import Runtime
from rsdchat.settings import Settings
from rsdchat.testing import ScriptedModel

# -- opening ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"delta": 0.8},
        {"weighting": "logistic", "alpha": 5.0, "delta": 0.6},
        {"weighting": "constant", "p": 0.3},
        {"mode": Mode.TARGET_ONLY},
        {"max_steps": 4, "temperature": 0.5, "score_target_steps": True},
    ],
)
async def test_the_initial_policy_is_the_one_the_settings_describe(settings: dict[str, Any]) -> None:
    chat = await open_chat(**settings)
    assert chat.runtime is not None
    assert chat.session.policy == chat.runtime.policy()  # the same δ, ω, budgets, reward source
    assert chat.kinds() == ["session"] and not chat.of(NoteShown)  # no change note at start
    header = chat.session.transcript.records[0]
    assert header["knobs"] == Choice(chat.runtime.settings).to_dict()
    assert header["models"] == {"backend": "llamacpp", "draft": "tiny-draft", "target": "tiny-target"}
    assert chat.session.ready and chat.session.why_not_ask() is None
    assert [e.state for e in chat.of(Loading)] == ["ready"]


async def test_models_load_in_the_background(monkeypatch: pytest.MonkeyPatch) -> None:
    ready = asyncio.Event()
    runtime = make_runtime()

    async def slow_open(settings: Settings, *args: object, **kwargs: object) -> Runtime:
        await ready.wait()
        return runtime

    monkeypatch.setattr("rsdchat.chat.session.open_runtime", slow_open)
    chat = Chat(settings=runtime.settings)
    opening = asyncio.ensure_future(chat.session.open())
    await wait_until(lambda: bool(chat.of(Loading)))
    assert chat.of(Loading)[0].state == "loading" and "loading models" in chat.of(Loading)[0].text
    assert not chat.session.ready and chat.session.status().state == "loading models…"
    assert "still loading; your question is kept" in (chat.session.why_not_ask() or "")
    with pytest.raises(ConfigError, match="still loading"):
        await chat.ask("What is 2+2?")
    with pytest.raises(ConfigError, match="still loading"):
        await chat.session.command("/delta 0.8")
    assert chat.kinds() == ["session"]  # nothing was asked
    ready.set()
    await opening
    assert [e.state for e in chat.of(Loading)] == ["loading", "ready"]
    assert (await chat.ask("What is 2+2?")).final_answer == "4"
    await chat.session.aclose()
    assert runtime.backends["llamacpp"].closed  # type: ignore[attr-defined]  # it opened the runtime


def test_a_listener_whose_loop_closed_is_dropped_not_raised_into_the_backend() -> None:
    heard: list[str] = []

    async def open_and_forget() -> None:
        progress_to(heard.append).__enter__()  # a chat that never closed

    asyncio.run(open_and_forget())
    PROGRESS.info("a server started")  # in the backend's thread: must not raise
    assert heard == []

    async def open_another() -> int:
        with progress_to(heard.append):  # the next chat drops the stale listeners
            return sum(type(h).__name__ == "_ToLoop" for h in PROGRESS.handlers)

    assert asyncio.run(open_another()) == 1


async def test_what_a_backend_says_reaches_the_chat_until_it_closes() -> None:
    chat = Chat(make_runtime())
    await chat.session.open()
    await asyncio.to_thread(PROGRESS.info, "vllm: the draft vLLM server stopped; starting it again")
    await wait_until(lambda: bool(chat.of(BackendSaid)))
    await chat.session.open()  # opened twice, heard once
    await asyncio.to_thread(PROGRESS.info, "again")
    await wait_until(lambda: len(chat.of(BackendSaid)) >= 2)
    await chat.session.aclose()
    # from a backend's thread; had anyone still listened, the line would have reached the loop before
    # this await returns (the thread puts it there first)
    await asyncio.to_thread(PROGRESS.info, "after the chat closed")
    assert [e.text for e in chat.of(BackendSaid)] == [
        "vllm: the draft vLLM server stopped; starting it again", "again"]  # fmt: skip


async def test_a_load_failure_is_reported_and_the_chat_stays_usable() -> None:
    chat = Chat(settings=Settings(backend="no-such-backend"))
    await chat.session.open()  # never raises
    (error,) = chat.notices("error")
    assert error.startswith("could not load the models: unknown backend 'no-such-backend'")
    assert [e.state for e in chat.of(Loading)] == ["loading", "failed"]
    assert chat.session.status().state == "could not load the models"
    for attempt in (chat.ask("hello"), chat.session.command("/delta 0.8"), chat.session.nudge_delta(1)):
        with pytest.raises(ConfigError, match="could not be loaded: unknown backend"):
            await attempt
    chat.session.new()  # what needs no model still works
    await chat.session.aclose()


async def test_settings_that_cannot_be_used_are_said_and_can_be_changed() -> None:
    chat = Chat(make_runtime(target=BlackBox(), weighting="likelihood-ratio"))
    await chat.session.open()
    (error,) = chat.notices("error")
    assert "needs log-probabilities the target backend does not give" in error
    assert "settings cannot be used" in (chat.session.why_not_ask() or "")
    assert chat.session.status().state == "the settings cannot be used: change them"
    await chat.session.command("/weighting binary")
    assert chat.session.why_not_ask() is None
    (note,) = chat.records("change")
    assert note["text"] == "weighting likelihood-ratio α=10 → binary δ=0.7"
    assert (await chat.ask("What is 2+2?")).final_answer == "4"


# -- answering ----------------------------------------------------------------------------


async def test_steps_arrive_with_author_reward_and_decision() -> None:
    chat = await open_chat()
    trace = await chat.ask("What is 2+2?")
    expected = [(0, "draft", 0.9, True), (1, "draft", 0.2, False), (1, "target", None, True)]
    expected.append((2, "draft", 0.9, True))
    assert shape(chat.steps()) == expected
    scored = [u.event.decision for u in chat.of(EngineUpdate) if isinstance(u.event, StepScored)]
    assert [(d.reward, d.omega, d.accepted, d.threshold) for d in scored] == [
        (0.9, 1.0, True, 0.7),
        (0.2, 0.0, False, 0.7),
        (0.9, 1.0, True, 0.7),
    ]
    assert all(u.policy is chat.session.policy for u in chat.of(EngineUpdate))
    assert chat.tokens() == "".join([DRAFT[0], DRAFT[1], TARGET[1], DRAFT[2]])
    records = chat.records("step")
    assert [(r["index"], r["author"], r["accepted"]) for r in records] == [e[:2] + e[3:] for e in expected]
    assert records[1]["decision"] == {
        "reward": 0.2,
        "omega": 0.0,
        "accepted": False,
        "u": None,
        "invalid": False,
        "weighting": {"name": "binary", "delta": 0.7},
    }
    assert records[1]["reward_source"] == "scripted" and records[1]["reward_bounds"] == [0.0, 1.0]
    assert records[2]["decision"] is None and records[2]["reward_bounds"] is None
    (answer,) = chat.records("answer")
    assert answer["final_answer"] == "4" == trace.final_answer and answer["finish_reason"] == "answer"
    assert (answer["drafts"], answer["accepted_drafts"], answer["steps"]) == (3, 2, 3)
    assert chat.kinds() == ["session", "user", "step", "step", "step", "step", "answer"]
    (started,) = chat.of(TurnStarted)
    (finished,) = chat.of(TurnFinished)
    assert (started.turn, started.question) == (1, "What is 2+2?") and finished.record is answer
    assert chat.session.acceptance.describe() == "2/3 drafts accepted (67%)"


async def test_the_status_says_what_is_in_force_and_what_it_cost() -> None:
    chat = await open_chat(delay=0.01)
    rows = dict(chat.session.status().rows)
    assert rows["reward"] == "scripted" and rows["weighting"] == "binary δ=0.7"
    assert rows["δ"] == "0.7 (default)" and rows["accepted"] == "–" and rows["style"] == "math (auto)"
    answering = chat.start("What is 2+2?")
    await wait_until(lambda: bool(chat.steps()))
    status = chat.session.status()
    assert status.state == "answering #1… (Esc stops)"
    written = sum(s.tokens for s in chat.steps() if s.author is Role.DRAFT)  # the steps done so far
    assert written >= 3 and status.cost.cost(Role.DRAFT).generated_tokens == written
    await answering
    status = chat.session.status()
    assert (
        status.state == "ready"
        and status.subtitle == "rsd · reward scripted · binary δ=0.7 · accepted 2/3 · math"
    )
    assert dict(status.rows)["accepted"] == "2/3 drafts (67%)"
    cost = status.cost
    assert (cost.cost(Role.DRAFT).generated_tokens, cost.cost(Role.TARGET).generated_tokens) == (12, 4)
    assert cost.flops == 2 * 1_000_000 * (15 + 5)


async def test_multi_turn_history_reaches_the_models() -> None:
    draft = ScriptedModel(DRAFT, name="tiny-draft")
    chat = await open_chat(draft)
    await chat.ask("What is 2+2?")
    await chat.ask("And 3+3?")
    messages = draft.calls[-1].messages
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0].content == MATH_SYSTEM_PROMPT
    assert messages[1].content == "What is 2+2?" and messages[3].content == "And 3+3?"
    assert messages[2].content.startswith("Step one: 2+2=4.\n\nStep two, done right.")
    assert [e.turn for e in chat.of(TurnFinished)] == [1, 2]


async def test_the_system_prompt_applies_to_the_next_question() -> None:
    draft = ScriptedModel(DRAFT, name="tiny-draft")
    chat = await open_chat(draft)
    await chat.session.command("/system Be terse.")
    await chat.ask("What is 2+2?")
    assert draft.calls[0].messages[0].content == "Be terse."
    assert chat.records("change")[0]["text"] == "system prompt → 'Be terse.'"
    assert chat.records("user")[0]["system"] == "Be terse."
    await chat.session.command("/system default")
    assert chat.records("change")[-1]["text"] == "system prompt → the default"


async def test_a_backend_error_keeps_the_steps_and_the_chat_recovers() -> None:
    class Flaky(ScriptedModel):
        failures = 1

        async def generate(self, context: Context, request: StepRequest, on_token: Any = None) -> Generation:
            if context.response and self.failures:
                self.failures -= 1
                raise BackendError("llama.cpp failed on tiny-draft: out of memory")
            return await super().generate(context, request, on_token)

    chat = await open_chat(Flaky(DRAFT, name="tiny-draft"))
    trace = await chat.ask("What is 2+2?")
    assert trace.finish_reason == "error"
    assert chat.notices("error") == ["answer failed: llama.cpp failed on tiny-draft: out of memory"]
    (answer,) = chat.records("answer")
    assert answer["finish_reason"] == "error" and answer["content"] == DRAFT[0]
    assert answer["error"] == "llama.cpp failed on tiny-draft: out of memory"
    assert len(chat.records("step")) == 1 and "partial" not in answer
    assert (await chat.ask("Again?")).final_answer == "4"
    assert not chat.session.answering


async def test_a_solve_that_dies_without_its_finished_event_does_not_block_the_chat() -> None:
    chat = await open_chat()
    engine = chat.session.runtime.engine  # type: ignore[union-attr]
    real_solve = engine.solve

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    engine.solve = broken  # type: ignore[method-assign]
    trace = await chat.ask("What is 2+2?")
    assert trace.finish_reason == "error" and trace.error == "boom"
    assert chat.notices("error") == ["answer failed: boom"] and not chat.session.answering
    assert chat.records("answer")[0]["error"] == "boom"
    engine.solve = real_solve  # type: ignore[method-assign]
    assert (await chat.ask("What is 2+2?")).final_answer == "4"


async def test_stop_keeps_what_was_written_and_the_chat_goes_on() -> None:
    long = ["word " * 200 + "\n\n"]
    chat = await open_chat(long, long, delay=0.01)
    answering = chat.start("Talk a lot")
    await wait_until(lambda: len(chat.tokens()) > 20)
    assert chat.session.answering
    chat.session.stop()
    trace = await answering
    assert trace.finish_reason == "cancelled" and not chat.session.answering
    (answer,) = chat.records("answer")
    assert answer["finish_reason"] == "cancelled" and answer["partial"].startswith("word word")
    assert (answer["partial_index"], answer["partial_author"]) == (0, "draft")
    assert chat.notices() == ["answer stopped: stopped; what was written is kept"]
    engine = chat.session.runtime.engine  # type: ignore[union-attr]
    draft = engine.draft = ScriptedModel(DRAFT)
    engine.target = ScriptedModel(TARGET)
    assert (await chat.ask("What is 2+2?")).final_answer == "4"
    # no step was finished: the models never see the stopped turn (no two user turns in a row)
    assert [m.content for m in draft.calls[0].messages[1:]] == ["What is 2+2?"]


async def test_stop_before_the_first_step_still_ends_the_turn() -> None:
    chat = await open_chat()
    answering = chat.start("What is 2+2?")
    await asyncio.sleep(0)  # the question is asked; the solve has not run yet
    assert chat.session.answering
    chat.session.stop()
    trace = await answering
    assert trace.finish_reason == "cancelled" and not trace.steps
    assert chat.kinds() == ["session", "user", "answer"] and len(chat.of(TurnFinished)) == 1
    assert chat.notices() == ["answer stopped: stopped; what was written is kept"]
    assert (await chat.ask("What is 2+2?")).final_answer == "4"


async def test_a_busy_session_refuses_what_needs_it_idle(tmp_path: Any) -> None:
    chat = await open_chat(delay=0.02)
    answering = chat.start("What is 2+2?")
    await wait_until(lambda: bool(chat.tokens()))
    with pytest.raises(ConfigError, match="still answering"):
        await chat.ask("Another?")
    for line in ("/new", f"/load {tmp_path / 'x.jsonl'}"):
        with pytest.raises(ConfigError, match=r"stop the answer first \(Esc\)"):
            await chat.session.command(line)
    await answering
    assert chat.session.transcript.turns == 1
