"""The chat app as a view of its session, driven through Textual's pilot with scripted models.

The chat's logic is tested on `ChatSession` itself (tests/test_chat_*.py); these tests
check what the screen shows and what keys and the input do.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from chat_helpers import DRAFT, OrmServer, make_runtime, needs_openai, screen_text, wait_until
from textual import events
from textual.color import Color
from textual.pilot import Pilot
from textual.strip import Strip
from textual.widgets import Collapsible
from textual.widgets.collapsible import CollapsibleTitle

from rsdchat.chat.history import saved_chats
from rsdchat.core.errors import BackendError, ConfigError
from rsdchat.core.protocols import Score
from rsdchat.core.types import Context, Generation, StepRequest, Usage
from rsdchat.progress import PROGRESS
from rsdchat.runtime import Runtime
from rsdchat.settings import Settings
from rsdchat.testing import ScriptedModel, ScriptedReward
from rsdchat.tui import RsdChatApp, run
from rsdchat.tui.app import header_line
from rsdchat.tui.screens.help import HelpScreen
from rsdchat.tui.screens.history import HistoryScreen
from rsdchat.tui.widgets.status import StatusPanel
from rsdchat.tui.widgets.steps import AnswerBox, NoteLine, RejectedDraft, StepView, TurnView
from rsdchat.tui.widgets.welcome import Welcome

SNAPSHOTS = Path(__file__).parent / "snapshots"


def make_app(*args: Any, **kwargs: Any) -> RsdChatApp:
    return RsdChatApp(make_runtime(*args, **kwargs))


def strips(app: RsdChatApp) -> list[Strip]:
    return list(app.screen._compositor.render_strips())


async def settle(pilot: Pilot[None], app: RsdChatApp) -> None:
    """Wait for the answer to end and the screen to have drawn it."""
    deadline = time.monotonic() + 60  # a guard against a hang, not a bound on how long it takes
    while app.session.answering:
        assert time.monotonic() < deadline, "the answer did not finish"
        await pilot.pause(0.01)
    await pilot.pause()


async def type_line(pilot: Pilot[None], app: RsdChatApp, line: str, *, wait: bool = True) -> None:
    """Type a line and press Enter; `wait` also waits until the app is idle (not mid-answer)."""
    prompt = app.prompt
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
        assert "draft · step 1 · 3 tok · r 0.9 ░░░░░┃████░ ≥ δ 0.7 · ω 1 · ✓ accepted" in text
        assert "▶ ✗ rejected draft · step 2 · r 0.2 ░████┃░░░░░ < δ 0.7 · ω 0" in text
        assert "target · step 2 · 4 tok" in text and "Step two, done right." in text
        assert "Answer: 4" in text and "■ answered · 3 steps · drafts accepted 2/3" in text
        assert "accepted   2/3 drafts (67%)" in text  # the side panel
        assert "rsd · reward scripted · binary δ=0.7 · accepted 2/3 · math" in text  # the header
        (rejected,) = app.query(Collapsible)
        assert rejected.collapsed and "Step two is wrong." not in text
        rejected.collapsed = False
        await pilot.pause()
        assert "Step two is wrong." in screen_text(app)  # expandable, nothing lost
        assert app.focused is app.prompt  # typing goes to the input again


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
        assert app.prompt.value == ""
        await pilot.pause()
        assert "δ 0.7 → 0.95 — from the next step" in screen_text(app)  # the notification
        await settle(pilot, app)
        (turn,) = app.query(TurnView)
        kinds = [type(child).__name__ for child in turn.children]
        assert kinds[:3] == ["StepView", "NoteLine", "RejectedDraft"]  # step 1, the change, step 2
        assert [note.text for note in app.query(NoteLine)] == ["δ 0.7 → 0.95"]
        assert "⚙ δ 0.7 → 0.95" in screen_text(app)


async def test_delta_keys_change_delta_and_make_one_note() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+up")
        await pilot.pause()
        assert app.session.settings.delta == 0.75
        await pilot.press("f8")  # the same, for terminals without ctrl+arrows
        await pilot.pause()
        assert app.session.settings.delta == 0.8
        await pilot.press("ctrl+down")
        await pilot.pause()
        await pilot.press("f7")
        await pilot.pause()
        await pilot.press("f7")
        await pilot.pause()
        assert app.session.settings.delta == 0.65
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
        assert isinstance(app.screen, HelpScreen) and app.prompt.value == ""
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_the_input_keeps_what_could_not_be_done() -> None:
    app = make_app()
    async with app.run_test(size=(120, 30), notifications=True) as pilot:
        for bad in ("/frobnicate [now]", "/weighting nope", "/delta high"):
            await type_line(pilot, app, bad)
            assert app.prompt.value == bad  # what was typed is kept, to be fixed
        text = screen_text(app)
        assert "unknown command /frobnicate; type /help for the list" in text
        assert "δ must be a number, got 'high'" in text
        await type_line(pilot, app, "/weighting clip")
        assert app.prompt.value == ""
        await pilot.press("ctrl+up")
        await pilot.pause()
        assert "the clip weighting has no δ" in screen_text(app)
        await ask(pilot, app, "What is 2+2?")
        assert app.prompt.value == "" and "Answer: 4" in screen_text(app)


async def test_a_question_sent_while_the_models_load_stays_in_the_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ready = asyncio.Event()
    runtime = make_runtime()

    async def slow_open(settings: Settings, *args: object, **kwargs: object) -> Runtime:
        await asyncio.to_thread(PROGRESS.info, "vllm: draft server ready at http://127.0.0.1:9 (1.0 s)")
        await ready.wait()
        return runtime

    monkeypatch.setattr("rsdchat.chat.session.open_runtime", slow_open)
    app = RsdChatApp(runtime.settings)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await wait_until(lambda: "vllm: draft server ready" in screen_text(app))  # said from a thread
        await pilot.pause()
        text = screen_text(app)
        assert "loading models: draft tiny-draft, target tiny-target…" in text
        assert "tiny-draft (not" in text and "rsdchat — loading models…" in text
        await type_line(pilot, app, "What is 2+2?")
        assert app.prompt.value == "What is 2+2?"  # kept until the models are there
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
        assert app.prompt.value == "hello" and app.is_running


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
        assert "draft · step 1 · 4 tok · r 3.5 ░░░░░┃█████ ≥ δ 0 · ω 1 · ✓ accepted" in text
        assert "✗ rejected draft · step 2 · r -2 ░████┃░░░░░ < δ 0 · ω 0" in text and "Bye." in text
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
    for line in (*lines, "draft · step 1 · 3 tok · r 0.9 ░░░░░┃████░ ≥ δ 0.7 · ω 1 · ✓ accepted"):
        assert line in shown and line in reloaded, line
    resumed = RsdChatApp(make_runtime(), resume=path)  # `rsdchat --resume`
    async with resumed.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert all(line in screen_text(resumed) for line in lines)
        assert resumed.session.settings.delta == 0.8 and resumed.session.transcript.turns == 1


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
        await wait_until(lambda: app.session.settings.delta == 0.75)
        titles = [title for title, _, _ in app.palette_entries()]
        assert {"Reward: judge", "Weighting: logistic", "Mode: target-only", "Style: chat", "Help"} <= set(
            titles
        )
        entries = {title: action for title, _, action in app.palette_entries()}
        entries["Set δ…"]()
        await pilot.pause()
        assert app.prompt.value == "/delta "
        entries["Weighting: clip"]()
        await wait_until(lambda: app.session.settings.weighting == "clip")


async def test_quit_needs_no_save_the_chat_is_in_the_history(data_dir: Path) -> None:
    app = make_app()
    async with app.run_test(size=(120, 30), notifications=True) as pilot:
        await ask(pilot, app, "What is 2+2?")
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert not app.is_running
    (saved,) = saved_chats()
    assert saved.question == "What is 2+2?" and saved.path == app.session.autosave.path


async def test_quit_asks_once_when_the_history_could_not_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("RSDCHAT_DATA_DIR", str(blocked))  # chats/ cannot be made under a file
    app = make_app()
    async with app.run_test(size=(120, 30), notifications=True) as pilot:
        await ask(pilot, app, "What is 2+2?")
        assert "the chat is not in the history" in screen_text(app)
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert app.is_running and "could not be saved to the history" in screen_text(app)
        await type_line(pilot, app, f"/save {tmp_path / 'chat.jsonl'}")
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert not app.is_running


# -- math and Markdown shown readable --------------------------------------------------------

MATH_DRAFT = [
    "**April:** she sold \\(48\\) clips, that is \\(2^4 \\times 3\\).\n\n",
    "In May she sold half as many: \\[ \\frac{48}{2} = 42 \\]\n\n",
    "Altogether: \\[ 48 + 24 = 72 \\]\n\n",
    "So she sold \\(\\boxed{72}\\) clips.\n\n",
]
MATH_TARGET = ["-", "In May she sold half as many: \\[ \\frac{48}{2} = 24 \\]\n\n", "-", "-"]
NATALIA = "Natalia sold clips to 48 of her friends in April, and half as many in May. How many in all?"


def wrong_sum(context: Context, step: Generation) -> float:
    return 0.3 if "42" in step.text else 0.93


def math_app() -> RsdChatApp:
    return make_app(MATH_DRAFT, MATH_TARGET, wrong_sum)


async def test_math_and_markdown_are_shown_readable_and_saved_raw() -> None:
    app = math_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await ask(pilot, app, NATALIA)
        text = screen_text(app)
        for shown in (
            "April: she sold 48 clips, that is 2⁴ × 3.",
            "48/2 = 24",
            "48 + 24 = 72",
            "So she sold 72 clips.",
        ):
            assert shown in text, shown
        assert "\\frac" not in text and "**" not in text and "\\(" not in text and "\\boxed" not in text
        assert "Answer: 72" in text
        (answer,) = [seg for strip in strips(app) for seg in strip if seg.text == "72"]
        assert answer.style is not None and answer.style.bold  # the boxed answer, highlighted in its step
        await pilot.press("f6")  # every rejected draft open: its math is readable too
        await pilot.pause()
        assert "48/2 = 42" in screen_text(app)
        check_snapshot("math_160x48", screen_text(app))
    records = app.session.transcript.records
    assert any("\\frac{48}{2} = 42" in r.get("text", "") for r in records)  # the transcript keeps it raw
    assert "\\boxed{72}" in records[-1]["content"]
    narrow = math_app()
    async with narrow.run_test(size=(80, 24)) as pilot:
        await ask(pilot, narrow, NATALIA)
        check_snapshot("math_80x24", screen_text(narrow))
    saved = narrow.session.transcript
    replayed = math_app()
    async with replayed.run_test(size=(160, 48)) as pilot:
        await replayed.session.show(saved)
        await pilot.pause()
        assert "48/2 = 24" in screen_text(replayed) and "So she sold 72 clips." in screen_text(replayed)


class Halting:
    """A draft that writes its first step in two halves and waits between them (then a script)."""

    def __init__(self, halves: tuple[str, str], then: list[str]) -> None:
        self.model = ScriptedModel(then, name="tiny-draft")
        self.info = self.model.info
        self.halves, self.halfway, self.go_on = halves, asyncio.Event(), asyncio.Event()

    async def generate(self, context: Context, request: StepRequest, on_token: Any = None) -> Generation:
        if context.response:
            return await self.model.generate(context, request, on_token)
        first, second = self.halves
        on_token(first)
        self.halfway.set()
        await self.go_on.wait()
        on_token(second)
        return Generation(first + second, "step", Usage(1, 2), (-0.1, -0.1))


async def test_a_step_is_drawn_again_as_it_grows_and_unfinished_math_shows_raw() -> None:
    draft = Halting(("Half of 48 is \\[ \\frac{48}{", "2} = 24 \\]\n\n"), ["-", "So \\boxed{24}.\n\n"])
    app = make_app(draft)
    async with app.run_test(size=(120, 30)) as pilot:
        await type_line(pilot, app, "Half of 48?", wait=False)
        await wait_until(draft.halfway.is_set)
        await pilot.pause()
        assert "Half of 48 is \\[ \\frac{48}{" in screen_text(app)  # not complete: as written
        draft.go_on.set()
        await settle(pilot, app)
        text = screen_text(app)
        assert "Half of 48 is" in text and "48/2 = 24" in text and "\\frac" not in text


# -- keys: typing is never lost, focus shows, few Tab stops -----------------------------------


async def test_typing_while_the_transcript_has_focus_goes_to_the_input() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ask(pilot, app, "What is 2+2?")
        await pilot.press("tab")
        assert app.focused is app.view  # Tab: input → transcript
        assert app.view.styles.background != app.query_one("#main").styles.background  # focus shows
        await pilot.press("w", "h", "y", "space", "4")
        assert app.prompt.value == "why 4" and app.focused is app.prompt
        await pilot.press("tab", "tab")
        assert app.focused is app.prompt  # two stops: rejected drafts are none
        title = app.query_one(RejectedDraft).query_one(CollapsibleTitle)
        assert not title.can_focus
        await pilot.click(title)
        await pilot.pause()
        assert not app.query_one(RejectedDraft).collapsed  # a click still opens it
        await pilot.press("?")
        assert app.prompt.value == "why 4?" and app.focused is app.prompt
        await pilot.press("f6")
        await pilot.pause()
        assert all(d.collapsed for d in app.query(RejectedDraft))  # F6 opens or closes them all


async def test_the_help_screen_keeps_its_own_keys() -> None:
    app = make_app()
    async with app.run_test(size=(120, 60)) as pilot:
        await pilot.press("f1")
        await pilot.pause()
        await pilot.press("x")  # not sent to the input under the help
        assert app.prompt.value == "" and isinstance(app.screen, HelpScreen)
        for key in ("f6", "tab", "ctrl+q"):
            assert key in screen_text(app)


# -- the outcome reward, reached from inside the app ------------------------------------------

PROSE = ["Paris is the capital of France.\n\n", "It is wrong to say it is small.\n\n", "It has museums.\n\n"]
PROSE_TARGET = ["-", "It is a large city.\n\n", "-"]


@needs_openai
async def test_an_orm_chat_reached_from_inside_the_app() -> None:
    with OrmServer() as server:
        app = make_app(PROSE, PROSE_TARGET)
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await type_line(pilot, app, f"/reward orm {server.url}")
            await wait_until(lambda: app.session.reward is not None and app.session.reward.name == "orm")
            await pilot.pause()
            assert app.prompt.value == ""
            await ask(pilot, app, "Tell me about Paris")
            text = screen_text(app)
        assert server.replies and server.replies[0] == "Paris is the capital of France."
    assert "draft · step 1 · 6 tok · r 2.6 ░░░░░┃█████ ≥ δ 0 · ω 1 · ✓ accepted" in text
    assert "✗ rejected draft · step 2 · r -1.5 ░████┃░░░░░ < δ 0 · ω 0" in text
    assert "style      chat (auto)" in text and "server     http://127.0.0.1:" in text
    assert "rsd · reward orm · binary δ=0" in text and "· chat" in text  # the header
    (user,) = [r for r in app.session.transcript.records if r["type"] == "user"]
    assert user["in_force"]["reward"] == "orm" and user["in_force"]["reward_url"] == server.url


async def test_line_steps_judge_each_line_and_a_blank_line_shows_nothing() -> None:
    lines = ["Paris is the capital.\n", "\n", "It has museums.\n", ""]
    app = make_app(lines, lines, kind="outcome", default_delta=0.0, bounds=None)
    async with app.run_test(size=(120, 30)) as pilot:
        await type_line(pilot, app, "/steps line")
        assert "steps      line" in screen_text(app) and "⚙ steps paragraph → line" in screen_text(app)
        await ask(pilot, app, "Tell me about Paris")
        text = screen_text(app)
        assert "draft · step 1 · 4 tok · r 0.9" in text and "draft · step 3 · 3 tok · r 0.9" in text
        assert "step 2" not in text and "(empty step)" not in text  # the bare line break is not drawn


async def test_a_delta_outside_the_reward_range_is_refused_and_nothing_changes() -> None:
    app = make_app()
    async with app.run_test(size=(120, 30), notifications=True) as pilot:
        await pilot.pause()
        before = app.session.choice
        await type_line(pilot, app, "/delta 5")
        assert app.prompt.value == "/delta 5" and app.session.choice == before
        text = screen_text(app)
        assert "δ 5 is outside the range of" in text
        assert "δ          0.7 (default)" in text and not app.query(NoteLine)


async def test_a_drawn_decision_shows_its_draw_after_reloading(tmp_path: Path) -> None:
    app = make_app(weighting="logistic", alpha=4.0)
    path = tmp_path / "chat.jsonl"
    async with app.run_test(size=(120, 40)) as pilot:
        await ask(pilot, app, "What is 2+2?")
        await type_line(pilot, app, f"/save {path}")
    draws = [r["decision"]["u"] for r in app.session.transcript.records if r.get("decision")]
    assert draws and all(u is not None for u in draws)
    resumed = RsdChatApp(make_runtime(), resume=path)
    async with resumed.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        text = screen_text(resumed)
    for record in resumed.session.transcript.records:
        decision = record.get("decision")
        if decision:
            sign = "≥" if decision["omega"] >= decision["u"] else "<"
            assert f"ω {decision['omega']:.2g} {sign} u {decision['u']:.2f}" in text


# -- history, /copy, /retry, /keep ----------------------------------------------------------


async def test_a_saved_chat_is_reopened_from_the_history_list() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await type_line(pilot, app, "/history")
        assert "no saved chats yet" in screen_text(app)
        await ask(pilot, app, "What is 2+2?")
        first = app.session.autosave.path
        await type_line(pilot, app, "/new")
        await ask(pilot, app, "What is 3+3?")
        await type_line(pilot, app, "/history")
        assert isinstance(app.screen, HistoryScreen)
        text = screen_text(app)
        assert text.index("What is 3+3?") < text.index("What is 2+2?")  # newest first
        assert "1 question" in text and "this chat" in text
        await pilot.press("down", "enter")
        await wait_until(lambda: app.session.autosave.path == first)
        await pilot.pause()
        assert not isinstance(app.screen, HistoryScreen)
        text = screen_text(app)
        assert "What is 2+2?" in text and "What is 3+3?" not in text and "Answer: 4" in text
        await ask(pilot, app, "And 4+4?")  # it goes on in the same saved chat
    assert [c.questions for c in saved_chats()] == [2, 1]


async def test_copy_puts_the_last_answer_on_the_clipboard() -> None:
    app = make_app()
    async with app.run_test(size=(120, 30), notifications=True) as pilot:
        await type_line(pilot, app, "/copy")
        assert "no answer to copy yet" in screen_text(app)
        await ask(pilot, app, "What is 2+2?")
        await type_line(pilot, app, "/copy")
        assert app.clipboard == app.session.last_answer() and "\\boxed{4}" in app.clipboard
        assert "answer copied" in screen_text(app)


async def test_retry_and_keep_say_what_the_models_see() -> None:
    long = ScriptedModel(["Step one: 2+2=4.\n\n", "word " * 300 + "\n\n"], name="tiny-draft", delay=0.005)
    app = make_app(long)
    async with app.run_test(size=(160, 40), notifications=True) as pilot:
        await type_line(pilot, app, "What is 2+2?", wait=False)
        await wait_until(lambda: "word word" in (getattr(current_step(app), "text", "") or ""))
        await pilot.press("escape")
        await settle(pilot, app)
        assert "■ cancelled · 1 step · drafts accepted 1/1" in screen_text(app)
        assert "out of the context (/keep)" in screen_text(app)
        await type_line(pilot, app, "/keep")
        assert "kept in the context" in screen_text(app)
        engine = app.session.runtime.engine  # type: ignore[union-attr]
        engine.draft = ScriptedModel(DRAFT, name="tiny-draft")
        await type_line(pilot, app, "/delta 0.1")
        await type_line(pilot, app, "/retry")
        await settle(pilot, app)
        text = screen_text(app)
        assert "you #2 · asks #1 again (#1 is out of the context)" in text
        assert "asked again: out of the context" in text  # on turn 1's last line


# -- 80×24: the answering marker, the scroll position ----------------------------------------


async def test_at_80x24_answering_shows_without_the_side_panel() -> None:
    app = make_app(delay=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert not app.query_one(StatusPanel).display
        await type_line(pilot, app, "What is 2+2?", wait=False)
        await wait_until(lambda: current_step(app) is not None)
        await pilot.pause()
        text = screen_text(app)
        assert "answering #1… (Esc stops)" in text  # on the input's edge
        assert "rsdchat — answering #1…" in text  # and first in the header
        await settle(pilot, app)
        assert "answering" not in screen_text(app)


async def test_the_scroll_stays_where_the_user_reads() -> None:
    app = make_app(delay=0.01)
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.view
        for question in ("One?", "Two?", "Three?"):
            await ask(pilot, app, question)
            assert view.scroll_y == view.max_scroll_y  # the bottom, followed
        assert view.max_scroll_y > 0
        await type_line(pilot, app, "Four?", wait=False)
        seen = []
        while app.session.answering:  # reading the bottom while steps finish: it stays there
            seen.append(view.max_scroll_y - view.scroll_y)
            await asyncio.sleep(0.01)
        await settle(pilot, app)
        assert view.scroll_y == view.max_scroll_y and max(seen) <= 6  # (smooth scrolling lags a little)
        await pilot.press("tab", "pageup")  # the user scrolls up to read
        await pilot.pause()
        reading = view.scroll_y
        assert 0 < reading < view.max_scroll_y
        await type_line(pilot, app, "Five?", wait=False)  # a new turn starts and ends meanwhile
        await settle(pilot, app)
        assert view.scroll_y == reading  # neither pulled to the bottom nor to the first turn


# -- snapshots of the main screens (plain text; RSDCHAT_UPDATE_SNAPSHOTS=1 rewrites them) -------


def steady(text: str) -> str:
    """The screen without what the clock decides: seconds in finish lines and the cost table."""
    text = re.sub(r"· \d+\.\d s\b", "· 0.0 s", text)
    cost = re.compile(r"(▏ +(?:draft|target|reward|total) [^\n]* )\d+\.\d$")
    return "\n".join(cost.sub(r"\g<1>0.0", line) for line in text.split("\n"))


def check_snapshot(name: str, text: str) -> None:
    text = steady(text)
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


# -- issue 22: what a newcomer trips over ------------------------------------------------------

PASTED = "A shop sells pens at 3 for $2.\nHow much do 12 pens cost?"


async def test_a_pasted_two_line_question_arrives_whole() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        app.prompt.post_message(events.Paste(PASTED))
        await pilot.pause()
        assert app.prompt.value == PASTED  # both lines, nothing sent yet
        text = screen_text(app)
        assert "A shop sells pens at 3 for $2." in text and "How much do 12 pens cost?" in text
        check_snapshot("paste_80x24", text)
        await pilot.press("enter")
        await settle(pilot, app)
        (user,) = [r for r in app.session.transcript.records if r["type"] == "user"]
        assert user["content"] == PASTED  # the question the models got is whole
        assert app.prompt.value == ""
        text = screen_text(app)
        assert "A shop sells pens at 3 for $2." in text and "How much do 12 pens cost?" in text
        check_snapshot("paste_sent_80x24", text)


async def test_shift_enter_or_ctrl_j_types_a_new_line_and_a_paste_elsewhere_goes_to_the_input() -> None:
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("a", "shift+enter", "b", "ctrl+j", "c")
        assert app.prompt.value == "a\nb\nc" and not app.session.transcript.turns
        await pilot.press("enter")
        await settle(pilot, app)
        (user,) = [r for r in app.session.transcript.records if r["type"] == "user"]
        assert user["content"] == "a\nb\nc"
        await pilot.press("tab")
        assert app.focused is app.view
        app.post_message(events.Paste("one\r\ntwo\rthree"))  # as a terminal sends it, line ends of any style
        await pilot.pause()
        assert app.focused is app.prompt and app.prompt.value == "one\ntwo\nthree"


async def test_up_and_down_recall_what_was_sent_like_a_shell() -> None:
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ask(pilot, app, "One?")
        await type_line(pilot, app, "/delta 0.8")
        await ask(pilot, app, "Two\nlines?")
        prompt = app.prompt
        await pilot.press("d", "r", "a", "f", "t")
        seen = []
        for _ in range(5):  # a multi-line entry is gone through line by line; the oldest stays
            await pilot.press("up")
            seen.append(prompt.value)
        assert seen == ["Two\nlines?", "Two\nlines?", "/delta 0.8", "One?", "One?"]
        seen = []
        for _ in range(4):
            await pilot.press("down")
            seen.append(prompt.value)
        assert seen == ["/delta 0.8", "Two\nlines?", "Two\nlines?", "draft"]  # back to what was typed
        await pilot.press("up", "enter")
        await settle(pilot, app)
        questions = [r["content"] for r in app.session.transcript.records if r["type"] == "user"]
        assert questions == ["One?", "Two\nlines?", "Two\nlines?"]
    reopened = RsdChatApp(make_runtime(), resume=app.session.autosave.path)
    async with reopened.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press("up")
        assert reopened.prompt.value == "Two\nlines?"  # a chat reopened: its questions come back too


async def test_the_first_start_teaches_and_the_guidance_goes_with_the_first_question() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        text = screen_text(app)
        for line in (
            "rsdchat · Reward-Guided Speculative Decoding, step by step",
            "A small draft model writes each step and a reward r scores it",
            "rewritten by the larger target",
            "against δ (≥ keeps, < rejects), the weight ω (1 keeps, 0 rejects)",
            "math   A shirt costs $45 after a 25% discount. What was its price?",
            "prose  Explain what a hash table is in three sentences.",
            "Enter send · Shift+Enter/Ctrl+J new line · ↑ earlier questions",
            "Esc stop · Ctrl+↑/↓ (F8/F7) δ up/down · F1 or /help: everything",
        ):
            assert line in text, line
        check_snapshot("welcome_80x24", text)
        await ask(pilot, app, "What is 2+2?")
        assert not app.query(Welcome) and "Speculative Decoding" not in screen_text(app)
    wide = make_app()
    async with wide.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        check_snapshot("welcome_160x48", screen_text(wide))
    resumed = RsdChatApp(make_runtime(), resume=app.session.autosave.path)
    async with resumed.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert not resumed.query(Welcome)  # a chat reopened is shown as it was


async def test_help_explains_the_words_of_a_step_line_at_80_columns() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await type_line(pilot, app, "/help")
        text = screen_text(app)
        for line in (
            "rsd  the draft writes each step; below δ, the target rewrites it",
            "r    a step's reward, from the /reward source (its bar: r against δ)",
            "δ    threshold: a draft step with r ≥ δ is kept (ctrl+↑/↓, /delta)",
            "ω    the /weighting of r: ω 1 keeps the draft step, ω 0 rejects it",
            "eos  the model ended its reply itself, with no boxed final answer",
        ):
            assert line in text, line  # one line each
        check_snapshot("help_80x24", text)


async def test_a_final_answer_is_not_called_right() -> None:
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ask(pilot, app, "What is 2+2?")
        text = screen_text(app)
        assert "■ answered · 3 steps" in text and "✓ answer" not in text
        segments = [seg for strip in strips(app) for seg in strip]

        def colour(word: str) -> object:
            (found,) = {seg.style.color for seg in segments if word in seg.text and seg.style is not None}
            return found

        green = colour("✓ accepted")  # a decision: said in green
        assert colour("■ answered") != green and colour("Answer: 4") != green
        success = Color.parse(app.theme_variables["success"])
        assert app.query_one(AnswerBox).styles.border_top[1] != success  # the box is not green either


async def test_the_header_names_the_reward_at_80_columns() -> None:
    runtime = make_runtime(delay=0.05)
    assert isinstance(runtime.reward, ScriptedReward)
    runtime.reward.name = "arithmetic*draft-confidence"  # the default's name, the longest usual one
    app = RsdChatApp(runtime)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        header = screen_text(app).splitlines()[0]
        assert "rsd · reward arithmetic×draft-confidence · binary δ=0.7" in header
        await type_line(pilot, app, "What is 2+2?", wait=False)
        await wait_until(lambda: current_step(app) is not None)
        await pilot.pause()
        header = screen_text(app).splitlines()[0]
        assert "answering #1… · rsd · reward arithmetic×draft-confidence" in header
        await settle(pilot, app)
        header = screen_text(app).splitlines()[0]
        assert "reward arithmetic×draft-confidence · binary δ=0.7 · accepted 2/3" in header
        await pilot.resize_terminal(160, 24)
        await pilot.pause()
        header = screen_text(app).splitlines()[0]
        assert (
            "rsdchat — rsd · reward arithmetic×draft-confidence · binary δ=0.7 · accepted 2/3 · math"
            in header
        )


def test_the_header_drops_the_title_then_the_least_essential_parts() -> None:
    sub = "rsd · reward arithmetic×draft-confidence · binary δ=0.88 · accepted 3/4 · math"
    assert header_line("rsdchat", sub, 200) == ("rsdchat", sub)
    assert header_line("rsdchat", sub, 80) == ("", sub)
    assert header_line("rsdchat", sub, 75) == ("", sub.removesuffix(" · math"))
    assert header_line("rsdchat", sub, 10) == ("", "rsd")
    assert header_line("rsdchat", "loading models…", 10) == ("", "loading models…")


def by_text_reward(context: Context, step: Generation) -> float:
    return 0.2 if "wrong" in step.text else 0.9


@dataclass
class Explaining(ScriptedReward):
    """A reward that says why, as the arithmetic check does."""

    async def score(self, context: Context, step: Generation) -> Score:
        score = await super().score(context, step)
        return replace(
            score, detail="1 of 2 equations wrong" if score.reward < 0.5 else "2 equations check out"
        )


async def test_a_rejected_step_says_why(tmp_path: Path) -> None:
    runtime = make_runtime()
    runtime.reward = Explaining(by_text_reward)
    app = RsdChatApp(runtime)
    path = tmp_path / "chat.jsonl"
    async with app.run_test(size=(80, 24)) as pilot:
        await ask(pilot, app, "What is 2+2?")
        text = screen_text(app)
        assert "✗ rejected draft · step 2 · r 0.2 ░████┃░░░░░ < δ 0.7 · ω 0 · 1 of 2" in text
        assert "equations wrong" in text
        assert "check out" not in text  # a kept step's line stays short
        check_snapshot("rejected_why_80x24", text)
        await type_line(pilot, app, f"/save {path}")
    resumed = RsdChatApp(make_runtime(), resume=path)
    async with resumed.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        assert "< δ 0.7 · ω 0 · 1 of 2 equations wrong" in screen_text(resumed)  # and after reloading


HASH_TABLE = "Explain what a hash table is in three sentences."
PROSE_DRAFT = [
    "A hash table stores values under keys.",
    " It turns each key into an index with a hash function, and looks there.",
    " Lookups are fast, usually constant time.",
]
PROSE_TARGET = [
    "A hash table maps keys to values.",
    " A hash function turns each key into a slot of an array, so a lookup goes straight to it.",
    " Finding, adding and removing a key take constant time on average.",
]


class ProseModel(ScriptedModel):
    """Writes the sentence after as many as the reply holds; `unsure` of them with low confidence."""

    def __init__(self, sentences: list[str], name: str, unsure: tuple[int, ...] = ()) -> None:
        super().__init__(self._next, name=name)
        self.sentences, self.unsure = sentences, unsure

    def _next(self, context: Context, request: StepRequest) -> str:
        done = context.response.count(".")
        return self.sentences[done] if done < len(self.sentences) else ""

    async def generate(self, context: Context, request: StepRequest, on_token: Any = None) -> Generation:
        generation = await super().generate(context, request, on_token)
        done = context.response.count(".")
        finish = "step" if done < len(self.sentences) - 1 else "eos"  # a sentence step ends at its "."
        logprob = -1.5 if done in self.unsure else -0.2  # draft-confidence 0.22 or 0.82 (the chat's δ 0.5)
        logprobs = tuple(logprob for _ in generation.token_logprobs or ())
        return replace(generation, finish_reason=finish, token_logprobs=logprobs)


async def test_a_prose_answer_with_the_chat_defaults() -> None:
    """A prose question in a chat left at its defaults: chat style, draft-confidence at δ 0.5 in
    sentence steps; the draft keeps its sure sentences, the target writes the unsure one."""
    runtime = make_runtime(
        ProseModel(PROSE_DRAFT, "tiny-draft", unsure=(1,)), ProseModel(PROSE_TARGET, "tiny-target")
    )
    runtime.settings = runtime.settings.replace(reward=Settings().reward)  # the reward left at its default
    for size, name in (((80, 24), "prose_80x24"), ((160, 48), "prose_160x48")):
        app = RsdChatApp(runtime)
        async with app.run_test(size=size) as pilot:
            await ask(pilot, app, HASH_TABLE)
            text = screen_text(app)
            check_snapshot(name, text)
        (asked,) = [r for r in app.session.transcript.records if r["type"] == "user"]
        assert asked["in_force"]["style"] == "chat" and asked["in_force"]["reward"] == "draft-confidence"
        steps = [r for r in app.session.transcript.records if r["type"] == "step"]
        assert [s["decision"]["accepted"] for s in steps if s["decision"]] == [True, False, True]
        (answer,) = [r for r in app.session.transcript.records if r["type"] == "answer"]
        assert answer["content"] == PROSE_DRAFT[0] + PROSE_TARGET[1] + PROSE_DRAFT[2]
