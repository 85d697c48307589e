"""The chat app driven through Textual's pilot, with scripted models for determinism."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from textual.pilot import Pilot
from textual.widgets import Collapsible, Input

from rsdchat.engine import Engine, Mode, Policy
from rsdchat.errors import BackendError, ConfigError
from rsdchat.runtime import Runtime
from rsdchat.settings import Settings
from rsdchat.testing import ScriptedModel, ScriptedReward
from rsdchat.tui import RsdChatApp, run
from rsdchat.tui.session import CHAT_SYSTEM_PROMPT
from rsdchat.tui.widgets import NoteLine, StepView
from rsdchat.types import Context, Generation, Role, StepRequest

SNAPSHOTS = Path(__file__).parent / "snapshots"
DRAFT = ["Step one: 2+2=4.\n\n", "Step two is wrong.\n\n", "So the answer is \\boxed{4}.\n\n"]
TARGET = ["T one.\n\n", "Step two, done right.\n\n", "Thus \\boxed{4}.\n\n"]


def by_text(context: Context, step: Generation) -> float:
    return 0.2 if "wrong" in step.text else 0.9


class FakeBackend:
    """Hands out the scripted models when the app loads one it was opened without."""

    def __init__(self, models: dict[Role, ScriptedModel]) -> None:
        self.models = models

    def generator(self, role: Role, model: str) -> ScriptedModel:
        return self.models[role]

    async def aclose(self) -> None:
        pass


def make_app(
    draft: Sequence[str] | ScriptedModel = DRAFT,
    target: Sequence[str] | ScriptedModel = TARGET,
    reward: Callable[[Context, Generation], float] = by_text,
    *,
    kind: Literal["process", "outcome"] = "process",
    default_delta: float = 0.7,
    delay: float = 0.0,
    **settings: Any,
) -> RsdChatApp:
    d = draft if isinstance(draft, ScriptedModel) else ScriptedModel(draft, name="tiny-draft", delay=delay)
    t = (
        target
        if isinstance(target, ScriptedModel)
        else ScriptedModel(target, name="tiny-target", delay=delay)
    )
    source = ScriptedReward(reward, kind=kind, default_delta=default_delta)
    chosen = Settings(draft="tiny-draft", target="tiny-target", reward="scripted", **settings)
    engine = Engine(draft=d, target=t, reward=source, policy=chosen.policy(default_delta))
    return RsdChatApp(Runtime(chosen, engine, FakeBackend({Role.DRAFT: d, Role.TARGET: t})))


def screen_text(app: RsdChatApp) -> str:
    return "\n".join(strip.text.rstrip() for strip in app.screen._compositor.render_strips())


async def settle(pilot: Pilot[None], app: RsdChatApp, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while app.generating:
        assert time.monotonic() < deadline, "the answer did not finish"
        await pilot.pause(0.01)
    await pilot.pause()


async def type_line(pilot: Pilot[None], app: RsdChatApp, line: str, *, wait: bool = True) -> None:
    """Type a line and press enter; `wait` also waits for the app to go idle (not mid-answer)."""
    prompt = app.query_one(Input)
    prompt.value = line
    if wait:
        await pilot.press("enter")
        await pilot.pause()
    else:  # pressing keys waits for the app to be idle, which it is not while streaming
        await prompt.action_submit()
        await wait_until(lambda: prompt.value != line)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def ask(pilot: Pilot[None], app: RsdChatApp, question: str) -> None:
    await type_line(pilot, app, question)
    await settle(pilot, app)


def records(app: RsdChatApp, kind: str) -> list[dict[str, Any]]:
    return [r for r in app.transcript.records if r["type"] == kind]


def errors(app: RsdChatApp) -> list[str]:
    return [text for severity, text in app.notices if severity == "error"]


async def test_steps_arrive_with_author_reward_and_decision() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ask(pilot, app, "What is 2+2?")
        steps = records(app, "step")
        assert [(s["index"], s["author"], s["reward"], s["accepted"]) for s in steps] == [
            (0, "draft", 0.9, True),
            (1, "draft", 0.2, False),
            (1, "target", None, True),
            (2, "draft", 0.9, True),
        ]
        text = screen_text(app)
        assert "draft · step 1 · 3 tok · r 0.9" in text and "≥ δ 0.7 · ω 1 · ✓ accepted" in text
        assert "✗ rejected draft · step 2 · r 0.2" in text and "< δ 0.7" in text
        assert "target · step 2" in text and "Step two, done right." in text
        assert "Answer: 4" in text
        assert "2/3 drafts (67%)" in text  # the side panel
        (rejected,) = app.query(Collapsible)
        assert rejected.collapsed and "Step two is wrong." not in text
        rejected.collapsed = False
        await pilot.pause()
        assert "Step two is wrong." in screen_text(app)  # expandable, nothing lost
        (answer,) = records(app, "answer")
        assert answer["final_answer"] == "4" and answer["finish_reason"] == "answer"


async def test_tokens_stream_into_the_step_being_written() -> None:
    app = make_app(["one two three four five six seven eight nine ten\n\n"], delay=0.05)
    async with app.run_test() as pilot:
        await type_line(pilot, app, "count", wait=False)
        await wait_until(lambda: app.view.current is not None and "three" in app.view.current.text)
        view = app.view.current
        assert isinstance(view, StepView) and view.author == "draft"
        assert view.text and view.text != "one two three four five six seven eight nine ten\n\n"
        assert "writing…" in screen_text(app)
        await settle(pilot, app)


async def test_delta_key_changes_the_next_answer_and_is_noted() -> None:
    app = make_app()
    async with app.run_test() as pilot:
        await pilot.press("ctrl+up")
        await pilot.pause()
        assert app.engine is not None and app.engine.policy.weighting.describe() == "binary δ=0.75"
        await pilot.press("f8")  # the same, for terminals without ctrl+arrows
        await pilot.pause()
        (note,) = records(app, "change")  # consecutive presses make one note
        assert note["text"] == "δ 0.7 → 0.8" and note["knobs"]["delta"] == 0.8
        await pilot.press("ctrl+down")
        await pilot.pause()
        assert records(app, "change")[0]["text"] == "δ 0.7 → 0.75"
        await ask(pilot, app, "What is 2+2?")
        assert {s["weighting"] for s in records(app, "step")} == {"binary δ=0.75"}
        assert [note.text for note in app.query(NoteLine)] == ["δ 0.7 → 0.75"]


async def test_slash_delta_mid_answer_applies_from_the_next_step() -> None:
    app = make_app(delay=0.05)
    async with app.run_test() as pilot:
        await type_line(pilot, app, "What is 2+2?", wait=False)
        await wait_until(lambda: app.view.current is not None)
        assert app.generating and app.view.current is not None and app.view.current.index == 0
        await type_line(pilot, app, "/delta 0.95", wait=False)
        assert records(app, "change") == [] and "from the next step" in app.notices[-1][1]
        await settle(pilot, app)
        kinds = [(r["type"], r.get("index"), r.get("author")) for r in app.transcript.records[1:]]
        assert kinds[:3] == [("user", None, None), ("step", 0, "draft"), ("change", None, None)]
        steps = records(app, "step")
        assert steps[0]["weighting"] == "binary δ=0.7" and steps[0]["accepted"]
        assert all(s["weighting"] == "binary δ=0.95" for s in steps[1:])
        assert [s["author"] for s in steps[1:] if s["index"] == 2] == ["draft", "target"]  # 0.9 < 0.95
        (change,) = records(app, "change")
        assert change["from_step"] == 1 and change["turn"] == 1 and change["text"] == "δ 0.7 → 0.95"


async def test_weighting_command_and_invalid_values() -> None:
    app = make_app()
    async with app.run_test() as pilot:
        await type_line(pilot, app, "/weighting logistic 10 0.7")
        assert app.query_one(Input).value == ""
        await ask(pilot, app, "q")
        assert {s["weighting"] for s in records(app, "step")} == {"logistic α=10 δ=0.7"}
        for bad in ("/weighting logistic x", "/weighting nope", "/delta nan", "/delta", "/mode fast"):
            await type_line(pilot, app, bad)
            assert app.query_one(Input).value == bad  # what was typed is kept
        assert len(errors(app)) == 5
        assert "unknown weighting 'nope'" in errors(app)[1]
        await pilot.press("ctrl+up")  # logistic has a δ too
        await pilot.pause()
        assert app.engine is not None and app.engine.policy.weighting.describe() == "logistic α=10 δ=0.75"
        await type_line(pilot, app, "/weighting clip")
        await pilot.press("ctrl+up")
        await pilot.pause()
        assert app.notices[-1][0] == "warning" and "has no δ" in app.notices[-1][1]


async def test_bad_slash_command_notifies_and_app_stays_usable() -> None:
    app = make_app()
    async with app.run_test(notifications=True) as pilot:
        await type_line(pilot, app, "/frobnicate [now]")
        assert errors(app) == ["/frobnicate: unknown command /frobnicate; type /help for the list"]
        assert app.query_one(Input).value == "/frobnicate [now]"
        await ask(pilot, app, "What is 2+2?")
        assert records(app, "answer")[0]["final_answer"] == "4"


async def test_backend_error_notifies_keeps_the_steps_and_recovers() -> None:
    class Flaky(ScriptedModel):
        failures = 1

        async def generate(self, context: Context, request: StepRequest, on_token: Any = None) -> Generation:
            if context.response and self.failures:
                self.failures -= 1
                raise BackendError("llama.cpp failed on tiny-draft: out of memory")
            return await super().generate(context, request, on_token)

    app = make_app(Flaky(DRAFT, name="tiny-draft"))
    async with app.run_test(notifications=True) as pilot:
        await ask(pilot, app, "What is 2+2?")
        assert errors(app) == ["answer failed: llama.cpp failed on tiny-draft: out of memory"]
        (answer,) = records(app, "answer")
        assert answer["finish_reason"] == "error" and answer["content"] == "Step one: 2+2=4.\n\n"
        assert "✗ error: llama.cpp failed" in screen_text(app)
        await ask(pilot, app, "Again?")
        assert records(app, "answer")[1]["final_answer"] == "4"


async def test_escape_stops_the_answer_and_keeps_what_was_written() -> None:
    long = ["word " * 200 + "\n\n"]
    app = make_app(long, long, delay=0.01)
    async with app.run_test() as pilot:
        await type_line(pilot, app, "Talk a lot", wait=False)
        await wait_until(lambda: app.view.current is not None and len(app.view.current.text) > 20)
        assert app.generating
        await pilot.press("escape")
        await settle(pilot, app)
        (answer,) = records(app, "answer")
        assert answer["finish_reason"] == "cancelled" and answer["partial"].startswith("word word")
        assert "■ cancelled" in screen_text(app) and "stopped" in screen_text(app)
        assert app.is_running
        assert app.engine is not None
        app.engine.draft, app.engine.target = ScriptedModel(DRAFT), ScriptedModel(TARGET)
        await ask(pilot, app, "What is 2+2?")
        assert records(app, "answer")[1]["finish_reason"] == "answer"


async def test_multi_turn_history_reaches_the_models() -> None:
    draft = ScriptedModel(DRAFT, name="tiny-draft")
    app = make_app(draft)
    async with app.run_test() as pilot:
        await ask(pilot, app, "What is 2+2?")
        await ask(pilot, app, "And 3+3?")
        messages = draft.calls[-1].messages
        assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
        assert messages[1].content == "What is 2+2?" and messages[3].content == "And 3+3?"
        assert messages[2].content.startswith("Step one: 2+2=4.\n\nStep two, done right.")


async def test_save_load_and_export(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ask(pilot, app, "What is 2+2?")
        await type_line(pilot, app, "/delta 0.8")
        await type_line(pilot, app, f"/save {path}")
        await type_line(pilot, app, f"/export {tmp_path / 'chat.md'}")
        shown = screen_text(app)
        await type_line(pilot, app, "/new")
        assert "Step one" not in screen_text(app) and app.transcript.turns == 0
        await type_line(pilot, app, "/delta 0.3")
        await type_line(pilot, app, f"/load {path}")
        assert app.knobs.delta == 0.8  # the settings in force when it was saved
        assert app.engine is not None and app.engine.policy.weighting.describe() == "binary δ=0.8"
        reloaded = screen_text(app)
        for line in ("✗ rejected draft · step 2 · r 0.2", "target · step 2", "Answer: 4", "⚙ δ 0.7 → 0.8"):
            assert line in shown and line in reloaded
        await ask(pilot, app, "And 3+3?")
        assert app.transcript.turns == 2 and len(app.transcript.history()) == 2
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["type"] == "session" and lines[0]["settings"]["draft"] == "tiny-draft"
    step = next(r for r in lines if r["type"] == "step" and not r["accepted"])
    assert step["author"] == "draft" and step["reward"] == 0.2 and step["omega"] == 0.0
    assert step["weighting"] == "binary δ=0.7" and step["reward_source"] == "scripted"
    markdown = (tmp_path / "chat.md").read_text()
    assert "## You (turn 1)" in markdown and "**Answer: 4**" in markdown
    assert "<details><summary>✗ step 2 · draft · r 0.2 · ω 0 · rejected" in markdown


async def test_resume_and_broken_transcripts(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    app = make_app()
    async with app.run_test() as pilot:
        await ask(pilot, app, "What is 2+2?")
        await type_line(pilot, app, f"/save {path}")
    resumed = make_app()
    resumed._resume = path
    async with resumed.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert "Answer: 4" in screen_text(resumed) and resumed.transcript.turns == 1
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"type": "session", "version": 1}\nnot json\n')
        await type_line(pilot, resumed, f"/load {bad}")
        assert f"{bad}:2: not JSON" in errors(resumed)[-1]
        assert resumed.transcript.turns == 1  # unchanged
    with pytest.raises(ConfigError, match="cannot read"):
        run(Settings(), resume=tmp_path / "missing.jsonl")


async def test_outcome_reward_makes_an_open_ended_chat() -> None:
    steps = ["Paris is the capital.\n\n", "It has \\boxed{many} museums.\n\n", "Bye.\n\n"]
    scores = iter([3.5, -2.0, 1.0])
    draft = ScriptedModel(steps, name="tiny-draft")
    app = make_app(draft, reward=lambda c, s: next(scores), kind="outcome", default_delta=0.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await ask(pilot, app, "Tell me about Paris")
        assert draft.calls[0].messages[0].content == CHAT_SYSTEM_PROMPT
        steps_done = records(app, "step")
        assert [(s["author"], s["reward"], s["accepted"]) for s in steps_done] == [
            ("draft", 3.5, True),
            ("draft", -2.0, False),
            ("target", None, True),
            ("draft", 1.0, True),  # no stop at a boxed answer in chat style
            ("draft", None, True),  # the reply ends (eos, empty: not scored)
        ]
        text = screen_text(app)
        assert "style      chat (auto)" in text and "δ          0 (default)" in text
        assert "r 3.5" in text and "≥ δ 0" in text
        await type_line(pilot, app, "/mode math")
        assert app.engine is not None and app.engine.policy.stop_at_answer
        await type_line(pilot, app, "/reward arithmetic")  # a process source: math, its own δ
        assert app.engine.policy.weighting.describe() == "binary δ=1"
        # consecutive changes with nothing in between make one note
        assert (
            records(app, "change")[-1]["text"] == "style chat → math; reward scripted → arithmetic; δ 0 → 1"
        )


async def test_mode_switches_who_writes() -> None:
    app = make_app()
    async with app.run_test() as pilot:
        await type_line(pilot, app, "/mode target-only")
        await ask(pilot, app, "What is 2+2?")
        assert {(s["author"], s["weighting"]) for s in records(app, "step")} == {("target", "target-only")}
        await type_line(pilot, app, "/mode draft-only")
        await ask(pilot, app, "Again")
        assert {s["author"] for s in records(app, "step")[3:]} == {"draft"}
        assert records(app, "change")[-1]["text"] == "mode target-only → draft-only"


async def test_mode_rsd_loads_models_the_runtime_skipped() -> None:
    app = make_app(mode=Mode.TARGET_ONLY)
    assert app.runtime is not None
    app.runtime.engine.draft = None
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert "tiny-draft (not" in screen_text(app)  # the panel says what is not loaded
        await type_line(pilot, app, "/mode rsd")
        assert app.engine is not None and app.engine.draft is not None
        await ask(pilot, app, "What is 2+2?")
        assert records(app, "step")[0]["author"] == "draft"


async def test_system_prompt_applies_to_the_next_question() -> None:
    draft = ScriptedModel(DRAFT, name="tiny-draft")
    app = make_app(draft)
    async with app.run_test() as pilot:
        await type_line(pilot, app, "/system Be terse.")
        await ask(pilot, app, "What is 2+2?")
        assert draft.calls[0].messages[0].content == "Be terse."
        assert records(app, "change")[0]["text"] == "system prompt → 'Be terse.'"


async def test_models_load_in_the_background(monkeypatch: pytest.MonkeyPatch) -> None:
    ready = asyncio.Event()
    runtime = make_app().runtime

    async def slow_open(settings: Settings) -> Runtime:
        await ready.wait()
        assert runtime is not None
        return runtime

    monkeypatch.setattr("rsdchat.tui.app.open_runtime", slow_open)
    app = RsdChatApp(Settings(draft="tiny-draft", target="tiny-target", reward="scripted"))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert "loading models…" in screen_text(app)
        await type_line(pilot, app, "What is 2+2?")
        assert app.query_one(Input).value == "What is 2+2?"  # kept until the models are there
        assert "still loading" in app.notices[-1][1]
        ready.set()
        await pilot.pause(0.05)
        await ask(pilot, app, "What is 2+2?")
        assert records(app, "answer")[0]["final_answer"] == "4"


async def test_load_failure_is_shown_and_the_app_stays_open() -> None:
    app = RsdChatApp(Settings(backend="no-such-backend"))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.1)
        assert "unknown backend 'no-such-backend'" in errors(app)[0]
        assert "could not load the models" in screen_text(app)
        await type_line(pilot, app, "hello")
        assert app.query_one(Input).value == "hello" and app.is_running


async def test_command_palette_entries() -> None:
    app = make_app()
    async with app.run_test() as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        for char in "raise":
            await pilot.press(char)
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert app.knobs.delta == 0.75
        titles = [title for title, _, _ in app.palette_entries()]
        assert {"Reward: judge", "Weighting: logistic", "Mode: target-only", "Style: chat"} <= set(titles)


async def test_help_lists_commands_and_keys() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await type_line(pilot, app, "/help")
        text = screen_text(app)
        for usage in ("/delta VALUE", "/weighting NAME [PARAMS]", "/load PATH", "ctrl+↑ / f8", "esc"):
            assert usage in text


# -- snapshots of the main screen states (plain text; RSDCHAT_UPDATE_SNAPSHOTS=1 rewrites them) --


def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / f"tui_{name}.txt"
    if os.environ.get("RSDCHAT_UPDATE_SNAPSHOTS") or not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    assert text + "\n" == path.read_text(encoding="utf-8"), f"screen differs from {path}"


async def test_snapshot_screens() -> None:
    app = make_app()
    async with app.run_test(size=(120, 34)) as pilot:
        await pilot.pause()
        check_snapshot("empty", screen_text(app))
        await ask(pilot, app, "What is 2+2?")
        check_snapshot("answered", screen_text(app))
        await pilot.press("f4")
        await type_line(pilot, app, "/help")
        check_snapshot("help", screen_text(app))


def test_policy_default_matches_settings() -> None:
    """The app's initial policy is the runtime's (no change note at start)."""
    settings = Settings(reward="scripted")
    assert make_app().runtime is not None
    assert Policy().weighting.describe() == settings.policy(0.7).weighting.describe()


async def test_quit_asks_once_when_the_chat_is_not_saved(tmp_path: Path) -> None:
    app = make_app()
    async with app.run_test() as pilot:
        await ask(pilot, app, "What is 2+2?")
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert app.is_running and "not saved" in app.notices[-1][1]
        await type_line(pilot, app, f"/save {tmp_path / 'chat.jsonl'}")
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert not app.is_running


async def test_a_solve_that_dies_without_its_last_event_does_not_block_the_chat() -> None:
    app = make_app()
    async with app.run_test(notifications=True) as pilot:
        assert app.engine is not None
        real_solve = app.engine.solve

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("boom")

        app.engine.solve = broken  # type: ignore[method-assign]
        await ask(pilot, app, "What is 2+2?")
        assert errors(app) == ["answer failed: boom"] and not app.generating
        app.engine.solve = real_solve  # type: ignore[method-assign]
        await ask(pilot, app, "What is 2+2?")
        assert records(app, "answer")[-1]["final_answer"] == "4"


async def test_a_change_during_the_last_step_is_noted_after_the_answer() -> None:
    app = make_app(["Only \\boxed{4} here, in one step.\n\n"], delay=0.05)
    async with app.run_test() as pilot:
        await type_line(pilot, app, "What is 2+2?", wait=False)
        await wait_until(lambda: app.view.current is not None)
        await type_line(pilot, app, "/weighting clip", wait=False)
        await settle(pilot, app)
        kinds = [r["type"] for r in app.transcript.records]
        assert kinds[-3:] == ["step", "answer", "change"]
        assert app.transcript.records[-1]["from_step"] is None
        assert app.transcript.records[-3]["weighting"] == "binary δ=0.7"
        assert app.engine is not None and app.engine.policy.weighting.describe() == "clip"


async def test_a_weighting_the_backend_cannot_serve_is_refused() -> None:
    class BlackBox:
        """A target that can write but not score text (like a plain HTTP endpoint)."""

        def __init__(self) -> None:
            self.model = ScriptedModel(TARGET, name="tiny-target")
            self.info = self.model.info

        async def generate(self, context: Context, request: StepRequest, on_token: Any = None) -> Generation:
            return await self.model.generate(context, request, on_token)

    app = make_app()
    assert app.runtime is not None
    app.runtime.engine.target = BlackBox()
    async with app.run_test() as pilot:
        await type_line(pilot, app, "/weighting likelihood-ratio 1")
        assert "needs log-probabilities the target does not give" in errors(app)[-1]
        assert app.knobs.weighting == "binary" and app.transcript.records[-1]["type"] == "session"
