"""Saved chats: written after every turn, listed newest first, reopened and continued; /retry, /keep."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from chat_helpers import DRAFT, TARGET, Chat, closed_chat, make_runtime, open_chat, wait_until

from rsdchat.chat.history import (
    TRASH,
    Autosave,
    SavedChat,
    chat_to_continue,
    chats_dir,
    matches,
    newest_chat,
    rename_chat,
    saved_chats,
    scan_chats,
    snippet,
    trash_chat,
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


# -- search, rename, delete ----------------------------------------------------------------------


def a_chat(text: str, title: str = "") -> SavedChat:
    return SavedChat(Path("x.jsonl"), datetime(2025, 6, 1), "q", 1, title, text)


def test_a_search_needs_every_word_in_a_question_an_answer_or_the_title() -> None:
    chat = a_chat("Tell me about zebras. Zebras have black and white STRIPES.", title="Safari notes")
    assert matches(chat, "") == ""  # no words: every chat
    assert matches(chat, "stripes zebra") == "Tell me about zebras. Zebras have black and white STRIPES."
    assert matches(chat, "stripes lions") is None  # every word, not any
    assert matches(chat, "SAFARI") == ""  # only in the title: listed, no snippet
    assert matches(chat, "safari white") == "…Zebras have black and white STRIPES."  # around "white"
    assert matches(chat, "a.out") is None  # a word is text, not a pattern


def test_a_snippet_is_the_text_around_the_first_hit_cut_between_words() -> None:
    text = " ".join(f"word{i}" for i in range(100))
    found = matches(a_chat(text), "word50 word60")
    assert found is not None and found.startswith("…word") and found.endswith("…")
    assert "word50" in found and len(found) <= 92 and found.index("word50") < 40
    assert found == snippet(text, text.index("word50"))
    assert snippet("short text", 6) == "short text"


async def test_the_list_reads_every_question_and_answer_and_the_title(data_dir: Path) -> None:
    path = await closed_chat("Tell me about zebras", "Zebras have stripes.")
    (chat,) = saved_chats()
    assert "Tell me about zebras" in chat.text and "Zebras have stripes." in chat.text
    assert (chat.title, chat.name) == ("", "Tell me about zebras")
    assert matches(chat, "STRIPES") is not None and matches(chat, "lions") is None
    modified = path.stat().st_mtime_ns
    rename_chat(path, "  Zebra   facts ")
    assert lines(path)[0]["title"] == "Zebra facts" and lines(path)[1:] == Transcript.load(path).records[1:]
    assert path.stat().st_mtime_ns == modified  # renaming does not move it up the list
    (chat,) = saved_chats()
    assert (chat.title, chat.name, chat.question) == ("Zebra facts", "Zebra facts", "Tell me about zebras")
    rename_chat(path, "")  # no title: its first question again
    assert "title" not in lines(path)[0] and saved_chats()[0].name == "Tell me about zebras"
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, f".{path.name}.lock"])


async def test_a_titled_chat_reloads_with_its_title_and_keeps_it(data_dir: Path) -> None:
    path = await closed_chat("What is 2+2?")
    rename_chat(path, "Sums")
    assert Transcript.load(path).records[0]["title"] == "Sums"
    chat = Chat(make_runtime())
    await chat.session.open()
    await chat.session.load(path)  # the header's title is not refused, and is written back
    await chat.ask("And 3+3?")
    assert lines(path)[0]["title"] == "Sums" and [r["type"] for r in lines(path)].count("user") == 2
    await chat.session.aclose()


async def test_a_deleted_chat_goes_to_the_trash_and_leaves_the_list(data_dir: Path) -> None:
    first = await closed_chat("First question?")
    before = first.read_bytes()
    moved = trash_chat(first)
    assert moved == data_dir / "chats" / TRASH / first.name and moved.read_bytes() == before
    assert not first.exists() and saved_chats() == []  # the trash is not listed
    first.write_bytes(before)  # a chat of the same name, deleted too, does not replace the first
    again = trash_chat(first)
    assert again.name == f"{first.stem}-2.jsonl" and moved.read_bytes() == before
    os.rename(moved, first)  # moved back: listed again
    assert [c.path for c in saved_chats()] == [first]


async def test_a_chat_open_in_another_rsdchat_is_neither_renamed_nor_deleted(data_dir: Path) -> None:
    path = await closed_chat("What is 2+2?")
    other = Chat(make_runtime())
    await other.session.open()
    await other.session.load(path)  # holds the chat's lock
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="open in another rsdchat"):
        rename_chat(path, "Mine")
    with pytest.raises(ConfigError, match="open in another rsdchat"):
        trash_chat(path)
    assert path.read_bytes() == before and not (path.parent / TRASH).exists()
    await other.session.aclose()


async def test_a_vanished_file_or_a_failed_write_changes_nothing(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = await closed_chat("What is 2+2?")
    gone = path.with_name("gone.jsonl")
    for act in (lambda: rename_chat(gone, "T"), lambda: trash_chat(gone)):
        with pytest.raises(ConfigError, match=r"gone\.jsonl is gone"):
            act()
    assert not gone.exists() and not gone.with_name(".gone.jsonl.lock").exists()
    before = path.read_bytes()

    def full_disk(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("rsdchat.files.os.write", full_disk)
    with pytest.raises(ConfigError, match="No space left on device") as failed:
        rename_chat(path, "T")
    assert "\n" not in str(failed.value) and path.read_bytes() == before
    (path.parent / TRASH).write_text("")  # a file where the trash folder would go
    with pytest.raises(ConfigError, match=f"cannot move {path} to {path.parent / TRASH}"):
        trash_chat(path)
    assert path.read_bytes() == before and [c.path for c in scan_chats()[0]] == [path]
