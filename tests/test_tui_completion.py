"""Tab completes a /command's name in the input: the pure `complete`, then the keys in the app."""

from __future__ import annotations

from chat_helpers import make_runtime, screen_text

from rsdchat.chat.commands import COMMANDS
from rsdchat.tui import RsdChatApp
from rsdchat.tui.widgets.prompt import complete

NAMES = ["delta", "weighting", "reward", "retry", "help", "history", "steps", "system", "save"]


def test_one_name_is_completed_with_a_space_for_the_arguments() -> None:
    assert complete("/del", NAMES) == ("/delta ", ["delta"])
    assert complete("/delta", NAMES) == ("/delta ", ["delta"])
    assert complete("/DEL", NAMES) == ("/delta ", ["delta"])  # as parse_command, any case


def test_several_names_are_completed_to_what_they_share() -> None:
    assert complete("/r", NAMES) == ("/re", ["reward", "retry"])
    assert complete("/h", NAMES) == ("/h", ["help", "history"])  # nothing more: the names are shown
    assert complete("/s", NAMES) == ("/s", ["steps", "system", "save"])
    assert complete("/", NAMES) == ("/", NAMES)


def test_no_name_leaves_the_text_as_it_is() -> None:
    assert complete("/xyz", NAMES) == ("/xyz", [])


def test_text_that_is_not_a_command_name_being_typed_is_left_alone() -> None:
    for text in ("", "del", "/delta 0.8", "/del ", " /del", "/del\nmore", "one\n/del"):
        assert complete(text, NAMES) == (text, [])


def test_the_names_are_those_of_the_commands_table() -> None:
    assert complete("/del", COMMANDS) == ("/delta ", ["delta"])
    assert complete("/", COMMANDS)[1] == list(COMMANDS)


async def test_tab_completes_a_command_in_the_input_and_moves_the_focus_otherwise() -> None:
    app = RsdChatApp(make_runtime())
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        prompt = app.prompt
        await pilot.press("/", "d", "e", "l", "tab")
        assert prompt.value == "/delta " and app.focused is prompt
        assert prompt.cursor_location == prompt.document.end
        await pilot.press("0", "tab")  # the arguments being typed: Tab goes to the transcript, as before
        assert prompt.value == "/delta 0" and app.focused is app.view
        await pilot.press("tab")
        prompt.value = "/h"
        await pilot.press("tab")  # /help and /history: the names are shown, the text stays
        assert prompt.value == "/h" and app.focused is prompt
        await pilot.pause()
        assert "/history  /help" in screen_text(app)  # the notification
        prompt.value = "/xyz"
        await pilot.press("tab")
        assert prompt.value == "/xyz" and app.focused is prompt
        await pilot.pause()
        assert "no command starts with /xyz" in screen_text(app)
