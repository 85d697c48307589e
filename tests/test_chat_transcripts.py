"""A chat's transcript through `ChatSession`: save, load, export, resume, broken files."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from chat_helpers import Chat, make_runtime, open_chat, wait_until

from rsdchat.chat.events import Loading, NoteShown, Replayed
from rsdchat.chat.transcript import Transcript, TranscriptError
from rsdchat.core.errors import ConfigError
from rsdchat.core.weighting import BinaryStep
from rsdchat.runtime import Runtime
from rsdchat.settings import Settings
from rsdchat.testing import ScriptedModel


async def test_save_load_and_export_round_trip(tmp_path: Path) -> None:
    path, markdown = tmp_path / "chat.jsonl", tmp_path / "chat.md"
    chat = await open_chat()
    await chat.ask("What is 2+2?")
    await chat.session.command("/delta 0.8")
    assert chat.session.transcript.unsaved
    await chat.session.command(f"/save {path}")
    assert not chat.session.transcript.unsaved
    await chat.session.command(f"/export {markdown}")
    saved = [json.loads(line) for line in path.read_text().splitlines()]
    assert saved == chat.session.transcript.records
    await chat.session.command("/new")
    await chat.session.command("/delta 0.3")
    await chat.session.command(f"/load {path}")
    assert chat.of(Replayed)[-1].records == saved  # drawn again from the same records
    assert chat.session.settings.delta == 0.8  # the settings in force when it was saved
    assert chat.session.policy is not None and chat.session.policy.weighting == BinaryStep(0.8)
    assert chat.session.transcript.records == saved  # restoring them is not a change
    assert dict(chat.session.status().rows)["accepted"] == "2/3 drafts (67%)"
    assert chat.session.spent.flops == saved[-2]["cost"]["total_flops"]
    assert chat.notices()[-1] == f"transcript loaded: {path}: 1 question(s)"
    assert not chat.notices("warning")  # the same models
    draft = chat.session.models()[0]
    assert isinstance(draft, ScriptedModel)
    await chat.ask("And 3+3?")
    assert chat.session.transcript.turns == 2 and len(chat.session.transcript.history()) == 2
    assert draft.calls[-1].messages[1].content == "What is 2+2?"
    await chat.session.command("/save")  # where it was loaded from
    await chat.session.command("/export")  # next to it
    assert len(path.read_text().splitlines()) == len(chat.session.transcript.records)
    assert "## You (turn 2)" in markdown.read_text()

    assert saved[0]["type"] == "session" and saved[0]["version"] == 2
    assert saved[0]["settings"]["draft"] == "tiny-draft"
    step = next(r for r in saved if r["type"] == "step" and not r["accepted"])
    assert step["author"] == "draft" and step["reward_source"] == "scripted"
    assert step["decision"]["reward"] == 0.2 and step["decision"]["omega"] == 0.0
    assert step["decision"]["weighting"] == {"name": "binary", "delta": 0.7}
    first = Transcript.load(path).to_markdown()
    assert "## You (turn 1)" in first and "**Answer: 4**" in first
    assert "<details><summary>✗ step 2 · draft · r 0.2 · ω 0 · rejected · binary δ=0.7" in first
    assert "> ⚙ δ 0.7 → 0.8" in first


async def test_a_note_already_saved_is_not_merged_into(tmp_path: Path) -> None:
    chat = await open_chat()
    await chat.session.nudge_delta(1)
    chat.session.save(tmp_path / "chat.jsonl")
    await chat.session.nudge_delta(1)
    assert [r["text"] for r in chat.records("change")] == ["δ 0.7 → 0.75", "δ 0.75 → 0.8"]
    assert chat.session.transcript.unsaved  # so quitting asks first
    await chat.session.nudge_delta(-1)
    await chat.session.nudge_delta(-1)
    assert [r["text"] for r in chat.records("change")] == ["δ 0.7 → 0.75", "δ 0.75 → 0.7"]


async def test_a_stopped_step_is_kept_in_the_saved_transcript(tmp_path: Path) -> None:
    long = ["word " * 200 + "\n\n"]
    chat = await open_chat(long, long, delay=0.01)
    answering = chat.start("Talk a lot")
    await wait_until(lambda: len(chat.tokens()) > 20)
    chat.session.stop()
    await answering
    chat.session.save(tmp_path / "stopped.jsonl")
    loaded = Transcript.load(tmp_path / "stopped.jsonl")
    (answer,) = [r for r in loaded.records if r["type"] == "answer"]
    assert answer["partial"].startswith("word word") and answer["finish_reason"] == "cancelled"
    assert "step 1 · draft · stopped while writing" in loaded.to_markdown()


async def test_resume_before_the_models_are_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "chat.jsonl"
    first = await open_chat()
    await first.ask("What is 2+2?")
    await first.session.command("/weighting logistic 10 0.6")
    first.session.save(path)
    ready = asyncio.Event()
    runtime = make_runtime()

    async def slow_open(settings: Settings, *args: object, **kwargs: object) -> Runtime:
        await ready.wait()
        return runtime

    monkeypatch.setattr("rsdchat.chat.session.open_runtime", slow_open)
    chat = Chat(settings=runtime.settings)
    await chat.session.show(Transcript.load(path))  # what `rsdchat --resume` does before opening
    assert chat.of(Replayed) and chat.session.transcript.turns == 1 and chat.session.policy is None
    opening = asyncio.ensure_future(chat.session.open())
    await wait_until(lambda: bool(chat.of(Loading)))
    ready.set()
    await opening
    assert chat.session.settings.weighting == "logistic" and chat.session.settings.delta == 0.6
    assert (
        chat.session.policy is not None and chat.session.policy.weighting.describe() == "logistic α=10 δ=0.6"
    )
    assert not chat.of(NoteShown) and not chat.notices("warning")
    assert (await chat.ask("And 3+3?")).final_answer == "4"


async def test_a_transcript_written_with_other_models_says_so(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    first = await open_chat()
    await first.ask("What is 2+2?")
    first.session.transcript.records[0]["models"]["draft"] = "other-draft"
    first.session.save(path)
    chat = await open_chat()
    await chat.session.load(path)
    assert chat.notices("warning") == ["other models: written with draft other-draft (now tiny-draft)"]


async def test_settings_that_cannot_be_restored_are_said_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    first = await open_chat()
    await first.session.command("/delta 0.8")
    first.session.transcript.records[-1]["knobs"]["reward"] = "no-such-reward"
    first.session.save(path)
    chat = await open_chat()
    await chat.session.load(path)
    (warning,) = chat.notices("warning")
    said = "its settings were not restored: bad settings in transcript: reward: unknown reward"
    assert warning.startswith(f"transcript loaded: {said}")
    assert chat.session.settings.delta is None and chat.session.policy is not None
    assert chat.session.transcript.path == path  # the transcript itself is loaded


async def test_broken_transcripts_are_refused_with_file_and_line(tmp_path: Path) -> None:
    chat = await open_chat()
    await chat.ask("What is 2+2?")
    before = chat.session.transcript
    bad = tmp_path / "bad.jsonl"
    cases = {
        '{"type": "session", "version": 2}\nnot json\n': f"{bad}:2: not JSON",
        '{"type": "session", "version": 2}\n{"type": "step", "turn": 1}\n': f"{bad}:2: step record without",
        '{"type": "session", "version": 1}\n': "transcript version 1 is not supported",
        '{"type": "user", "turn": 1, "content": "q"}\n': "no session line first",
    }
    for text, message in cases.items():
        bad.write_text(text)
        with pytest.raises(TranscriptError) as caught:
            await chat.session.command(f"/load {bad}")
        assert message in str(caught.value)
    with pytest.raises(TranscriptError, match="cannot read"):
        await chat.session.load(tmp_path / "missing.jsonl")
    assert chat.session.transcript is before and chat.session.turn == 1  # unchanged
    assert not chat.of(Replayed)


async def test_paths_with_spaces_are_quoted(tmp_path: Path) -> None:
    chat = await open_chat()
    await chat.ask("What is 2+2?")
    await chat.session.command(f"/save '{tmp_path / 'my chat.jsonl'}'")
    assert (tmp_path / "my chat.jsonl").is_file()
    with pytest.raises(ConfigError, match="one path please"):
        await chat.session.command(f"/save {tmp_path / 'my chat.jsonl'}")
