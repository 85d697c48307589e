"""The chat list (/history) in the app: search by the whole text, rename, delete to the trash.

Driven through Textual's pilot, over chats saved by real sessions with scripted models; what
the files hold is read back from the disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chat_helpers import closed_chat, make_runtime, screen_text, wait_until
from textual.pilot import Pilot
from textual.widgets import Input

from rsdchat.chat.history import TRASH
from rsdchat.chat.transcript import Transcript
from rsdchat.tui import RsdChatApp
from rsdchat.tui.screens.history import ChatList, HistoryScreen


def header(path: Path) -> dict[str, Any]:
    first: dict[str, Any] = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    return first


async def open_history(pilot: Pilot[None], app: RsdChatApp) -> HistoryScreen:
    app.prompt.value = "/history"
    await pilot.press("enter")
    await pilot.pause()
    assert isinstance(app.screen, HistoryScreen)
    return app.screen


async def ask(pilot: Pilot[None], app: RsdChatApp, question: str) -> None:
    app.prompt.value = question
    await pilot.press("enter")
    await wait_until(lambda: not app.session.answering and app.session.transcript.last("answer") is not None)
    await pilot.pause()


async def test_typing_in_the_search_keeps_the_chats_with_every_word_anywhere() -> None:
    zebras = await closed_chat("Tell me about zebras", "Zebras have black and white stripes.")
    await closed_chat("What is 2+2?", "So the answer is \\boxed{4}.")
    app = RsdChatApp(make_runtime())
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_history(pilot, app)
        assert "Tell me about zebras" in screen_text(app) and "What is 2+2?" in screen_text(app)
        await pilot.press("slash", *"WHITE stripes")  # words of an answer, in another case
        assert app.focused is screen.query_one("#search")
        text = screen_text(app)
        assert "Tell me about zebras" in text and "What is 2+2?" not in text
        assert "Zebras have black and white stripes." in text  # the text around the hit
        await pilot.press("space", *"lions")
        assert "no saved chat has WHITE stripes lions" in screen_text(app)
        assert "Tell me about zebras" not in screen_text(app)
        screen.query_one("#search", Input).value = "zebras"
        await pilot.pause()
        await pilot.press("down")  # into the list, then Enter reopens the chat found
        assert isinstance(app.focused, ChatList)
        await pilot.press("enter")
        await wait_until(lambda: app.session.autosave.path == zebras)


async def test_r_gives_a_chat_a_title_written_in_its_file() -> None:
    path = await closed_chat("Tell me about zebras", "Zebras have stripes.")
    app = RsdChatApp(make_runtime())
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        screen = await open_history(pilot, app)
        await pilot.press("r")
        title = screen.query_one("#title", Input)
        assert app.focused is title and title.value == "Tell me about zebras"
        await pilot.press("escape")  # Esc keeps the old name, and the list stays
        assert isinstance(app.screen, HistoryScreen) and "title" not in header(path)
        await pilot.press("r")
        title.value = "Zebra facts"
        await pilot.press("enter")
        text = screen_text(app)
        assert "Zebra facts" in text and "chat renamed" in text and "Tell me about zebras" not in text
        assert header(path)["title"] == "Zebra facts"
        await pilot.press("slash", *"facts")  # the title is searched too
        assert "Zebra facts" in screen_text(app)


async def test_renaming_the_chat_open_now_keeps_the_title_through_its_next_turn() -> None:
    app = RsdChatApp(make_runtime())
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await ask(pilot, app, "What is 2+2?")
        path = app.session.autosave.path
        assert path is not None
        screen = await open_history(pilot, app)
        await pilot.press("r")
        screen.query_one("#title", Input).value = "Sums"
        await pilot.press("enter")
        assert "Sums · this chat" in screen_text(app) and header(path)["title"] == "Sums"
        await pilot.press("escape")
        await ask(pilot, app, "And 3+3?")  # the autosave writes the whole chat again
        assert app.session.autosave.path == path and header(path)["title"] == "Sums"
        assert Transcript.load(path).turns == 2


async def test_d_asks_then_moves_the_chat_to_the_trash() -> None:
    older = await closed_chat("Tell me about zebras", "Zebras have stripes.")
    app = RsdChatApp(make_runtime())
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await ask(pilot, app, "What is 2+2?")
        current = app.session.autosave.path
        assert current is not None
        await open_history(pilot, app)
        await pilot.press("d", "d")  # the chat open now (first in the list)
        assert "this is the chat open now" in screen_text(app) and current.exists()
        await pilot.press("down", "d")
        assert "press d again to move “Tell me about zebras” to the trash" in screen_text(app)
        await pilot.press("up", "down", "d")  # another key in between: the first d is forgotten
        assert older.exists() and "press d again" in screen_text(app)
        await pilot.press("d")
        trashed = older.parent / TRASH / older.name
        assert not older.exists() and trashed.exists()
        text = screen_text(app)
        assert "chat deleted" in text and "Tell me about zebras" not in text and "What is 2+2?" in text
        assert str(trashed)[:40] in text.replace("\n", "")  # where it went (the notice may wrap)


async def test_a_chat_gone_from_the_disk_is_one_line_and_changes_nothing() -> None:
    path = await closed_chat("Tell me about zebras", "Zebras have stripes.")
    app = RsdChatApp(make_runtime())
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        screen = await open_history(pilot, app)
        away = path.rename(path.with_name("elsewhere.jsonl"))  # another program moved it
        await pilot.press("r")
        screen.query_one("#title", Input).value = "Zebra facts"
        await pilot.press("enter")
        assert "not renamed" in screen_text(app) and "is gone" in screen_text(app)
        await pilot.press("d", "d")
        assert "not deleted" in screen_text(app) and isinstance(app.screen, HistoryScreen)
        assert "title" not in header(away) and not (path.parent / TRASH).exists()
        assert "Tell me about zebras" in screen_text(app)  # still listed: nothing changed here
