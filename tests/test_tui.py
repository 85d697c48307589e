"""The chat app as a view of its session, driven through Textual's pilot with scripted models.

The chat's logic is tested on `ChatSession` itself (tests/test_chat_*.py); these tests
check what the screen shows and what keys and the input do.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_chat_session import DRAFT, make_runtime
from textual.pilot import Pilot
from textual.widgets import Collapsible, Input

from rsdchat.errors import BackendError, ConfigError
from rsdchat.runtime import Runtime
from rsdchat.settings import Settings
from rsdchat.testing import ScriptedModel
from rsdchat.tui import RsdChatApp, run
from rsdchat.tui.screens.help import HelpScreen
from rsdchat.tui.widgets.status import StatusPanel
from rsdchat.tui.widgets.steps import NoteLine, StepView, TurnView
from rsdchat.types import Context, Generation, StepRequest

SNAPSHOTS = Path(__file__).parent / "snapshots"


def make_app(*args: Any, **kwargs: Any) -> RsdChatApp:
    return RsdChatApp(make_runtime(*args, **kwargs))


def screen_text(app: RsdChatApp) -> str:
    return "\n".join(strip.text.rstrip() for strip in app.screen._compositor.render_strips())


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def settle(pilot: Pilot[None], app: RsdChatApp) -> None:
    """Wait for the answer to end and the screen to have drawn it."""
    deadline = time.monotonic() + 10
    while app.session.answering:
        assert time.monotonic() < deadline, "the answer did not finish"
        await pilot.pause(0.01)
    await pilot.pause()


async def type_line(pilot: Pilot[None], app: RsdChatApp, line: str, *, wait: bool = True) -> None:
    """Type a line and press Enter; `wait` also waits until the app is idle (not mid-answer)."""
    prompt = app.query_one(Input)
    prompt.value = line
    if wait:
        await pilot.press("enter")
        await pilot.pause()
    else:  # pressing keys waits for the app to be idle, which it is not while streaming
        await prompt.action_submit()
        await wait_until(lambda: prompt.value != line)


async def ask(pilot: Pilot[None], app: RsdChatApp, question: str) -> None:
    await type_line(pilot, app, question)
    await settle(pilot, app)


def current_step(app: RsdChatApp) -> StepView | None:
    return app.view.current


async def test_the_screen_shows_author_reward_decision_and_the_rejected_draft() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ask(pilot, app, "What is 2+2?")
        text = screen_text(app)
        assert "you #1" in text and "What is 2+2?" in text
        assert "draft · step 1 · 3 tok · r 0.9 ███████┃█░ ≥ δ 0.7 · ω 1 · ✓ accepted" in text
        assert "▶ ✗ rejected draft · step 2 · r 0.2 ██░░░░░┃░░ < δ 0.7 · ω 0" in text
        assert "target · step 2 · 4 tok" in text and "Step two, done right." in text
        assert "Answer: 4" in text and "✓ answer · 3 steps · drafts accepted 2/3" in text
        assert "accepted   2/3 drafts (67%)" in text  # the side panel
        assert "rsd · math · binary δ=0.7 · accepted 2/3" in text  # the header
        (rejected,) = app.query(Collapsible)
        assert rejected.collapsed and "Step two is wrong." not in text
        rejected.collapsed = False
        await pilot.pause()
        assert "Step two is wrong." in screen_text(app)  # expandable, nothing lost
        assert app.focused is app.query_one(Input)  # typing goes to the input again


async def test_tokens_stream_into_the_step_being_written() -> None:
    app = make_app(["one two three four five six seven eight nine ten\n\n"], delay=0.05)
    async with app.run_test(size=(120, 30)) as pilot:
        await type_line(pilot, app, "count", wait=False)
        await wait_until(lambda: (step := current_step(app)) is not None and "three" in step.text)
        step = current_step(app)
        assert step is not None and step.author == "draft" and step.index == 0
        assert step.text != "one two three four five six seven eight nine ten\n\n"  # not all there yet
        await pilot.pause()
        text = screen_text(app)
        assert "draft · step 1 · writing…" in text and "one two three" in text
        assert "answering #1… (Esc stops)" in text
        await settle(pilot, app)
        assert "draft · step 1 · 10 tok" in screen_text(app)


async def test_a_change_mid_answer_is_drawn_between_the_steps() -> None:
    app = make_app(delay=0.1)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await type_line(pilot, app, "What is 2+2?", wait=False)
        await wait_until(lambda: current_step(app) is not None)
        await type_line(pilot, app, "/delta 0.95", wait=False)
        assert app.query_one(Input).value == ""
        await pilot.pause()
        assert "δ 0.7 → 0.95 — from the next step" in screen_text(app)  # the notification
        await settle(pilot, app)
        (turn,) = app.query(TurnView)
        kinds = [type(child).__name__ for child in turn.children]
        assert kinds[:3] == ["StepView", "NoteLine", "Collapsible"]  # step 1, the change, step 2
        assert [note.text for note in app.query(NoteLine)] == ["δ 0.7 → 0.95"]
        assert "⚙ δ 0.7 → 0.95" in screen_text(app)


async def test_delta_keys_change_delta_and_make_one_note() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+up")
        await pilot.pause()
        assert app.session.knobs.delta == 0.75
        await pilot.press("f8")  # the same, for terminals without ctrl+arrows
        await pilot.pause()
        assert app.session.knobs.delta == 0.8
        await pilot.press("ctrl+down")
        await pilot.pause()
        await pilot.press("f7")
        await pilot.pause()
        await pilot.press("f7")
        await pilot.pause()
        assert app.session.knobs.delta == 0.65
        assert [note.text for note in app.query(NoteLine)] == ["δ 0.7 → 0.65"]  # one line, kept current
        text = screen_text(app)
        assert "δ          0.65" in text and "binary δ=0.65" in text


async def test_escape_stops_the_answer_and_keeps_what_was_written() -> None:
    long = ["word " * 200 + "\n\n"]
    app = make_app(long, long, delay=0.01)
    async with app.run_test() as pilot:
        await type_line(pilot, app, "Talk a lot", wait=False)
        await wait_until(lambda: (step := current_step(app)) is not None and len(step.text) > 20)
        await pilot.press("escape")
        await settle(pilot, app)
        text = screen_text(app)
        assert "■ cancelled" in text and "draft · step 1 · stopped" in text and "word word" in text
        assert app.is_running


async def test_f4_hides_and_shows_the_side_panel() -> None:
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        panel = app.query_one(StatusPanel)
        assert panel.display and "backend" in screen_text(app)
        await pilot.press("f4")
        await pilot.pause()
        assert not panel.display and "backend" not in screen_text(app)
        await pilot.press("f4")
        await pilot.pause()
        assert panel.display
    narrow = make_app()
    async with narrow.run_test(size=(80, 30)) as pilot:
        await pilot.pause()
        panel = narrow.query_one(StatusPanel)
        assert not panel.display  # below 100 columns it starts hidden
        await pilot.press("f4")
        await pilot.pause()
        assert panel.display


async def test_f1_opens_the_help_screen_and_escape_closes_it() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for usage in ("/delta VALUE", "/weighting NAME [PARAMS]", "/load PATH", "ctrl+↑ / f8", "esc"):
            assert usage in text
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen) and app.is_running
        await type_line(pilot, app, "/help")
        assert isinstance(app.screen, HelpScreen) and app.query_one(Input).value == ""
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_the_input_keeps_what_could_not_be_done() -> None:
    app = make_app()
    async with app.run_test(size=(120, 30), notifications=True) as pilot:
        for bad in ("/frobnicate [now]", "/weighting nope", "/delta high"):
            await type_line(pilot, app, bad)
            assert app.query_one(Input).value == bad  # what was typed is kept, to be fixed
        text = screen_text(app)
        assert "unknown command /frobnicate; type /help for the list" in text
        assert "δ must be a number, got 'high'" in text
        await type_line(pilot, app, "/weighting clip")
        assert app.query_one(Input).value == ""
        await pilot.press("ctrl+up")
        await pilot.pause()
        assert "the clip weighting has no δ" in screen_text(app)
        await ask(pilot, app, "What is 2+2?")
        assert app.query_one(Input).value == "" and "Answer: 4" in screen_text(app)


async def test_a_question_sent_while_the_models_load_stays_in_the_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ready = asyncio.Event()
    runtime = make_runtime()

    async def slow_open(settings: Settings) -> Runtime:
        await ready.wait()
        return runtime

    monkeypatch.setattr("rsdchat.chat.session.open_runtime", slow_open)
    app = RsdChatApp(runtime.settings)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await pilot.pause()
        text = screen_text(app)
        assert "loading models: draft tiny-draft, target tiny-target…" in text
        assert "tiny-draft (not" in text and "rsdchat — loading models…" in text
        await type_line(pilot, app, "What is 2+2?")
        assert app.query_one(Input).value == "What is 2+2?"  # kept until the models are there
        assert "still loading; your question is kept" in screen_text(app)
        ready.set()
        await wait_until(lambda: app.session.ready)
        await pilot.pause()
        assert "models ready: draft tiny-draft, target tiny-target" in screen_text(app)
        await ask(pilot, app, "What is 2+2?")
        assert "Answer: 4" in screen_text(app)


async def test_a_load_failure_is_shown_and_the_app_stays_open() -> None:
    app = RsdChatApp(Settings(backend="no-such-backend"))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await wait_until(lambda: app.session.load_error is not None)
        await pilot.pause()
        text = screen_text(app)
        assert "could not load the models: unknown backend 'no-such-backend'" in text
        await type_line(pilot, app, "hello")
        assert app.query_one(Input).value == "hello" and app.is_running


async def test_a_backend_error_is_shown_and_the_next_question_works() -> None:
    class Flaky(ScriptedModel):
        failures = 1

        async def generate(self, context: Context, request: StepRequest, on_token: Any = None) -> Generation:
            if context.response and self.failures:
                self.failures -= 1
                raise BackendError("llama.cpp failed on tiny-draft: out of memory")
            return await super().generate(context, request, on_token)

    app = make_app(Flaky(DRAFT, name="tiny-draft"))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await ask(pilot, app, "What is 2+2?")
        text = screen_text(app)
        assert "answer failed" in text  # the notification
        assert "✗ error: llama.cpp failed on tiny-draft: out of memory · 1 step" in text
        assert "Step one: 2+2=4." in text
        await ask(pilot, app, "Again?")
        assert "Answer: 4" in screen_text(app)


async def test_an_outcome_reward_is_drawn_centred_on_delta() -> None:
    scores = iter([3.5, -2.0, 1.0])
    steps = ["Paris is the capital.\n\n", "It has \\boxed{many} museums.\n\n", "Bye.\n\n"]
    app = make_app(steps, reward=lambda c, s: next(scores), kind="outcome", default_delta=0.0, bounds=None)
    async with app.run_test(size=(120, 40)) as pilot:
        await ask(pilot, app, "Tell me about Paris")
        text = screen_text(app)
        assert "draft · step 1 · 4 tok · r 3.5 ░░░░░█████ ≥ δ 0 · ω 1 · ✓ accepted" in text
        assert "✗ rejected draft · step 2 · r -2" in text and "Bye." in text
        assert "style      chat (auto)" in text and "δ          0 (default)" in text


async def test_a_target_step_scored_only_for_show_has_no_verdict(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    app = make_app(score_target_steps=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await ask(pilot, app, "What is 2+2?")
        assert "target · step 2 · 4 tok · r 0.9 (not judged)" in screen_text(app)
        await type_line(pilot, app, f"/save {path}")
        await type_line(pilot, app, f"/load {path}")
        await pilot.pause()
        assert "target · step 2 · 4 tok · r 0.9 (not judged)" in screen_text(app)


async def test_a_reloaded_transcript_looks_as_it_did(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ask(pilot, app, "What is 2+2?")
        await type_line(pilot, app, "/delta 0.8")
        await type_line(pilot, app, f"/save {path}")
        shown = screen_text(app)
        await type_line(pilot, app, "/new")
        assert "Step one" not in screen_text(app) and "new chat" in screen_text(app)
        await type_line(pilot, app, f"/load {path}")
        await pilot.pause()
        reloaded = screen_text(app)
    lines = ("✗ rejected draft · step 2 · r 0.2", "target · step 2 · 4 tok", "Answer: 4", "⚙ δ 0.7 → 0.8")
    for line in (*lines, "draft · step 1 · 3 tok · r 0.9 ███████┃█░ ≥ δ 0.7 · ω 1 · ✓ accepted"):
        assert line in shown and line in reloaded, line
    resumed = RsdChatApp(make_runtime(), resume=path)  # `rsdchat --resume`
    async with resumed.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert all(line in screen_text(resumed) for line in lines)
        assert resumed.session.knobs.delta == 0.8 and resumed.session.transcript.turns == 1


def test_run_refuses_a_transcript_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        run(Settings(), resume=tmp_path / "missing.jsonl")


async def test_command_palette_entries() -> None:
    app = make_app()
    async with app.run_test() as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        for char in "raise":
            await pilot.press(char)
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(lambda: app.session.knobs.delta == 0.75)
        titles = [title for title, _, _ in app.palette_entries()]
        assert {"Reward: judge", "Weighting: logistic", "Mode: target-only", "Style: chat", "Help"} <= set(
            titles
        )
        entries = {title: action for title, _, action in app.palette_entries()}
        entries["Set δ…"]()
        await pilot.pause()
        assert app.query_one(Input).value == "/delta "
        entries["Weighting: clip"]()
        await wait_until(lambda: app.session.knobs.weighting == "clip")


async def test_quit_asks_once_when_the_chat_is_not_saved(tmp_path: Path) -> None:
    app = make_app()
    async with app.run_test(notifications=True) as pilot:
        await pilot.press("ctrl+q")  # nothing to lose yet
        await pilot.pause()
        assert not app.is_running
    app = make_app()
    async with app.run_test(size=(120, 30), notifications=True) as pilot:
        await ask(pilot, app, "What is 2+2?")
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert app.is_running and "this chat is not saved" in screen_text(app)
        await type_line(pilot, app, f"/save {tmp_path / 'chat.jsonl'}")
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert not app.is_running


# -- snapshots of the main screens (plain text; RSDCHAT_UPDATE_SNAPSHOTS=1 rewrites them) -------


def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / f"tui_{name}.txt"
    if os.environ.get("RSDCHAT_UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
        return
    assert path.is_file(), f"no snapshot {path}: write it with RSDCHAT_UPDATE_SNAPSHOTS=1, then read it"
    assert text + "\n" == path.read_text(encoding="utf-8"), f"the screen differs from {path}"


async def test_snapshot_screens() -> None:
    app = make_app()
    async with app.run_test(size=(120, 34)) as pilot:
        await pilot.pause()
        check_snapshot("empty", screen_text(app))
        await ask(pilot, app, "What is 2+2?")
        check_snapshot("answered", screen_text(app))
        await pilot.press("f4")
        await pilot.press("f1")
        await pilot.pause()
        check_snapshot("help", screen_text(app))


def test_a_missing_snapshot_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.SNAPSHOTS", tmp_path)
    monkeypatch.delenv("RSDCHAT_UPDATE_SNAPSHOTS", raising=False)
    with pytest.raises(AssertionError, match="no snapshot"):
        check_snapshot("nothing", "text")
    assert not (tmp_path / "tui_nothing.txt").exists()
