"""Saved chats: written after every turn, listed newest first, reopened and continued; /retry, /keep."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from chat_helpers import DRAFT, TARGET, Chat, make_runtime, open_chat, wait_until

from rsdchat.chat.history import (
    Autosave,
    chat_to_continue,
    chats_dir,
    newest_chat,
    saved_chats,
)
from rsdchat.chat.history import (
    data_dir as user_data_dir,
)
from rsdchat.chat.transcript import Transcript
from rsdchat.core.errors import ConfigError
from rsdchat.testing import ScriptedModel


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_data_directory_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSDCHAT_DATA_DIR", str(tmp_path / "mine"))
    assert user_data_dir() == tmp_path / "mine" and chats_dir() == tmp_path / "mine" / "chats"
    monkeypatch.delenv("RSDCHAT_DATA_DIR")
    assert user_data_dir().name == "rsdchat"  # platformdirs' user data directory


async def test_every_finished_turn_is_written_to_the_history(data_dir: Path) -> None:
    chat = await open_chat()
    assert saved_chats() == [] and chat.session.autosave.path is None  # nothing asked: nothing saved
    await chat.ask("What is 2+2?")
    path = chat.session.autosave.path
    assert path is not None and path.parent == data_dir / "chats"
    assert lines(path) == chat.session.transcript.records  # the whole turn, as recorded
    await chat.ask("And 3+3?")
    assert [r["type"] for r in lines(path)].count("answer") == 2
    files = [p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")]  # its lock stays
    assert files == [path.name]  # atomic: no temporary file left
    (saved,) = saved_chats()
    assert (saved.path, saved.question, saved.questions) == (path, "What is 2+2?", 2)
    assert not chat.session.transcript.unsaved or chat.session.autosave.written == len(lines(path))


async def test_a_turn_the_app_closes_on_is_kept(data_dir: Path) -> None:
    long = ["word " * 200 + "\n\n"]
    chat = await open_chat(long, long, delay=0.01)
    answering = chat.start("Talk a lot")
    await wait_until(lambda: len(chat.tokens()) > 20)
    answering.cancel()  # the app closing cancels the question's worker
    with pytest.raises(asyncio.CancelledError):
        await answering
    await chat.session.aclose()
    path = newest_chat()
    assert path is not None
    kinds = [r["type"] for r in lines(path)]
    assert kinds == ["session", "user", "answer"] and lines(path)[-1]["finish_reason"] == "cancelled"


async def test_the_list_is_newest_first_and_skips_what_is_not_a_chat(data_dir: Path) -> None:
    first = await open_chat()
    await first.ask("First question?")
    second = await open_chat()
    await second.ask("Second question?")
    older, newer = first.session.autosave.path, second.session.autosave.path
    assert older is not None and newer is not None and older != newer
    os.utime(older, (1_000_000_000, 1_000_000_000))
    (data_dir / "chats" / "notes.jsonl").write_text("not json\n")
    (data_dir / "chats" / "other.jsonl").write_text('{"type": "user"}\n')
    assert [c.path for c in saved_chats()] == [newer, older]
    assert [c.question for c in saved_chats()] == ["Second question?", "First question?"]
    assert newest_chat() == newer and chat_to_continue() == newer


def test_continue_without_a_saved_chat_says_where_they_are_kept(data_dir: Path) -> None:
    assert newest_chat() is None
    with pytest.raises(ConfigError, match=f"no saved chat to continue in {data_dir / 'chats'}"):
        chat_to_continue()


async def test_a_chat_reopened_from_the_history_goes_on_in_its_file(data_dir: Path) -> None:
    chat = await open_chat()
    await chat.ask("What is 2+2?")
    path = chat.session.autosave.path
    assert path is not None
    await chat.session.aclose()  # while it is open, another chat showing it goes on in a new file
    again = Chat(make_runtime())
    await again.session.open()
    await again.session.load(path)
    assert again.session.autosave.path == path
    await again.ask("And 3+3?")
    assert [r["type"] for r in lines(path)].count("user") == 2 and len(saved_chats()) == 1
    await again.session.command("/new")  # a new chat gets a file of its own
    await again.ask("Something else")
    assert len(saved_chats()) == 2


async def test_a_transcript_loaded_from_elsewhere_is_copied_not_changed(
    tmp_path: Path, data_dir: Path
) -> None:
    chat = await open_chat()
    await chat.ask("What is 2+2?")
    outside = tmp_path / "mine.jsonl"
    chat.session.save(outside)
    before = outside.read_text()
    again = await open_chat()
    await again.session.load(outside)
    await again.ask("And 3+3?")
    assert outside.read_text() == before  # the user's file is theirs
    copy = again.session.autosave.path
    assert (
        copy is not None and copy.parent == data_dir / "chats" and len(lines(copy)) > len(before.splitlines())
    )


def test_a_failed_write_is_said_once(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    autosave = Autosave(blocked / "chats")  # a directory under a file cannot be made
    transcript = Transcript([{"type": "session"}, {"type": "user", "turn": 1, "content": "q"}])
    first = autosave.write(transcript)
    assert first is not None and first.startswith("cannot write") and autosave.error
    assert autosave.write(transcript) is None and autosave.pending(transcript)


async def test_a_stopped_answer_leaves_the_context_unless_kept() -> None:
    slow = ScriptedModel(["Step one: 2+2=4.\n\n", "word " * 300 + "\n\n"], name="tiny-draft", delay=0.005)
    chat = await open_chat(slow)
    answering = chat.start("What is 2+2?")
    await wait_until(lambda: len(chat.steps()) == 1 and "word" in chat.tokens())
    chat.session.stop()
    trace = await answering
    assert trace.finish_reason == "cancelled" and trace.text == "Step one: 2+2=4.\n\n"
    assert "/keep keeps it there" in chat.notices()[-1]
    assert chat.session.transcript.history() == []  # the next question does not see it
    assert chat.session.keep() == 1
    assert [t.question for t in chat.session.transcript.history()] == ["What is 2+2?"]
    assert chat.records("answer")[0]["kept"] is True
    with pytest.raises(ConfigError, match="turn #1 is kept already"):
        chat.session.keep()
    engine = chat.session.runtime.engine  # type: ignore[union-attr]
    engine.draft = draft = ScriptedModel(DRAFT)
    await chat.ask("And then?")
    assert [m.content for m in draft.calls[0].messages[1:3]] == ["What is 2+2?", "Step one: 2+2=4.\n\n"]


async def test_only_a_stopped_answer_can_be_kept() -> None:
    chat = await open_chat()
    with pytest.raises(ConfigError, match="nothing to keep"):
        await chat.session.command("/keep")
    await chat.ask("What is 2+2?")
    with pytest.raises(ConfigError, match="only a stopped answer is left out"):
        await chat.session.command("/keep")


async def test_retry_asks_again_with_the_settings_now_in_force() -> None:
    chat = await open_chat()
    with pytest.raises(ConfigError, match="no question to ask again yet"):
        await chat.session.command("/retry")
    await chat.ask("What is 2+2?")
    await chat.session.command("/delta 0.1")
    engine = chat.session.runtime.engine  # type: ignore[union-attr]
    engine.draft = draft = ScriptedModel(DRAFT, name="tiny-draft")
    engine.target = ScriptedModel(TARGET, name="tiny-target")
    await chat.session.command("/retry")
    users = chat.records("user")
    assert [(u["turn"], u["content"], u.get("retry_of")) for u in users] == [
        (1, "What is 2+2?", None),
        (2, "What is 2+2?", 1),
    ]
    assert [m.content for m in draft.calls[0].messages[1:]] == ["What is 2+2?"]  # turn 1 left the context
    decisions = [r["decision"] for r in chat.records("step") if r["turn"] == 2 and r["decision"]]
    assert decisions and all(d["weighting"]["delta"] == 0.1 and d["accepted"] for d in decisions)
    assert [t.question for t in chat.session.transcript.history()] == ["What is 2+2?"]
    markdown = chat.session.transcript.to_markdown()
    assert "## You (turn 2, asking turn 1 again)" in markdown and "left out of the context" in markdown


async def test_the_last_answer_is_what_copy_copies() -> None:
    chat = await open_chat()
    assert chat.session.last_answer() is None
    await chat.ask("What is 2+2?")
    assert chat.session.last_answer() == chat.records("answer")[0]["content"].strip()


async def test_what_a_chat_did_after_its_last_turn_is_saved_before_another_is_shown() -> None:
    chat = await open_chat()
    await chat.ask("What is 2+2?")
    path = chat.session.autosave.path
    assert path is not None
    await chat.session.command("/delta 0.8")  # a ⚙ line after the last turn
    await chat.session.command("/new")
    assert lines(path)[-1]["type"] == "change" and lines(path)[-1]["text"] == "δ 0.7 → 0.8"
