"""The chat app answering through a real vLLM server (its CPU build), driven by Textual's pilot."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from real_vllm import Server

from rsdchat.settings import load_settings
from rsdchat.tui import RsdChatApp


async def test_the_chat_app_answers_through_vllm(
    vllm_generator: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RSDCHAT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("RSDCHAT_CONFIG", raising=False)
    url = vllm_generator.url
    settings = load_settings(
        None,
        backend="openai",
        draft_url=url,
        target_url=url,
        draft=vllm_generator.name,
        target=vllm_generator.name,
        reward="draft-confidence",
        max_steps=3,
        max_step_tokens=32,
    )
    app = RsdChatApp(settings)
    session = app.session
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 300
        while not session.ready:
            assert session.load_error is None, session.load_error
            assert time.monotonic() < deadline, "the servers were not reached"
            await pilot.pause(0.1)
        app.prompt.value = "What is 12 times 7?"
        await pilot.press("enter")
        await pilot.pause()
        while session.answering or not any(r["type"] == "answer" for r in session.transcript.records):
            assert time.monotonic() < deadline, "the answer did not finish"
            await pilot.pause(0.1)
        await pilot.pause()
        records = session.transcript.records
        (answer,) = [r for r in records if r["type"] == "answer"]
        steps = [r for r in records if r["type"] == "step"]
        assert answer["error"] is None and answer["content"]
        assert steps and steps[0]["author"] == "draft" and steps[0]["reward_source"] == "draft-confidence"
        assert answer["cost"]["draft"]["generated_tokens"] > 0
        assert records[0]["models"]["backend"] == "openai"
        assert "draft · step 1" in "\n".join(s.text for s in app.screen._compositor.render_strips())
