"""What is in force: the one function from settings to the policy, the chat's choice, its commands."""

from __future__ import annotations

import json

import pytest

from rsdchat.chat.choice import Choice
from rsdchat.chat.commands import COMMANDS, change, describe_change, parse_command
from rsdchat.chat.session import ChatSession
from rsdchat.core.errors import ConfigError
from rsdchat.core.policy import Mode
from rsdchat.core.weighting import BinaryStep, Logistic
from rsdchat.in_force import ChatExtras, Style, in_force, nudged_delta
from rsdchat.prompts import CHAT_SYSTEM_PROMPT, MATH_SYSTEM_PROMPT
from rsdchat.settings import Settings
from rsdchat.testing import ScriptedReward
from rsdchat.tui.app import RsdChatApp

PROCESS = ScriptedReward(lambda c, s: 0.0, kind="process", default_delta=0.7)
OUTCOME = ScriptedReward(lambda c, s: 0.0, kind="outcome", default_delta=0.0, bounds=None)
CHOICE = Choice(Settings(reward="arithmetic"))


def chosen(**changes: object) -> Choice:
    """CHOICE with settings and extras changed (extras by their field names)."""
    extras = {k: v for k, v in changes.items() if k in ChatExtras.__dataclass_fields__}
    settings = {k: v for k, v in changes.items() if k not in extras}
    return CHOICE.set(**settings).with_extras(**extras)


def test_in_force_is_the_settings_policy() -> None:
    settings = Settings(max_steps=5, temperature=0.3, weighting="logistic", delta=0.6, alpha=4.0)
    policy = in_force(settings, PROCESS).policy
    assert policy.weighting == Logistic(4.0, 0.6) and policy.reward is PROCESS
    assert (policy.max_steps, policy.temperature, policy.stop) == (5, 0.3, ("\n\n",))
    assert in_force(Settings(), PROCESS).weighting == BinaryStep(0.7)  # δ: the reward's default


def test_without_extras_the_settings_are_taken_as_they_are() -> None:
    """solve and eval: an outcome reward neither stops the answer early nor changes the prompt."""
    settings = Settings()
    solve = in_force(settings, OUTCOME)
    assert (
        solve.policy.stop_at_answer and solve.system == settings.system_prompt and solve.style is Style.MATH
    )
    chat = in_force(settings, OUTCOME, ChatExtras())
    assert not chat.policy.stop_at_answer and chat.system == CHAT_SYSTEM_PROMPT and chat.style is Style.CHAT


def test_a_chat_style_follows_the_reward_kind_unless_set() -> None:
    settings = Settings()
    assert CHOICE.in_force(PROCESS).style is Style.MATH and CHOICE.in_force(OUTCOME).style is Style.CHAT
    assert chosen(style=Style.MATH).in_force(OUTCOME).style is Style.MATH
    math, chat = CHOICE.in_force(PROCESS), CHOICE.in_force(OUTCOME)
    assert math.policy.stop_at_answer and not chat.policy.stop_at_answer
    assert math.weighting == BinaryStep(0.7) and chat.weighting == BinaryStep(0.0)
    assert math.system == MATH_SYSTEM_PROMPT and chat.system == CHAT_SYSTEM_PROMPT
    custom = Choice(settings.replace(system_prompt="Mine."))
    assert custom.in_force(OUTCOME).system == "Mine."  # a configured prompt is kept
    assert chosen(system="Own.").in_force(OUTCOME).system == "Own."
    assert chosen(steps="sentence").in_force(PROCESS).policy.stop == (". ", "? ", "! ", "\n")


def test_parse_command() -> None:
    assert parse_command("/delta 0.8") == ("delta", "0.8")
    assert parse_command("  /System   Be terse.  ") == ("system", "Be terse.")
    with pytest.raises(ConfigError, match=r"unknown command /nope; type /help"):
        parse_command("/nope 1")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/delta 0.8", {"delta": 0.8}),
        ("/delta default", {"delta": None}),
        ("/weighting logistic 10 0.7", {"weighting": "logistic", "alpha": 10.0, "delta": 0.7}),
        ("/weighting logistic 5", {"weighting": "logistic", "alpha": 5.0, "delta": 0.5}),  # δ kept
        ("/weighting binary", {"weighting": "binary"}),
        ("/weighting constant 0.3", {"weighting": "constant", "p": 0.3}),
        ("/weighting hybrid 2", {"weighting": "hybrid", "beta": 2.0}),
        ("/weighting Likelihood-Ratio 3", {"weighting": "likelihood-ratio", "alpha": 3.0}),
        ("/reward arithmetic * draft-confidence", {"reward": "arithmetic*draft-confidence"}),
        ("/mode target-only", {"mode": Mode.TARGET_ONLY}),
        ("/mode chat", {"style": Style.CHAT}),
        ("/mode auto", {"style": None}),
        ("/system Be terse.", {"system": "Be terse."}),
        ("/system default", {"system": None}),
        ("/steps sentence", {"steps": "sentence"}),
        ("/steps default", {"steps": None}),
    ],
)
def test_settings_commands(line: str, expected: dict[str, object]) -> None:
    name, rest = parse_command(line)
    after = change(name, rest, chosen(delta=0.5, style=Style.MATH, system="x", steps="line"))
    for key, value in expected.items():
        where = after.extras if key in ChatExtras.__dataclass_fields__ else after.settings
        assert getattr(where, key) == value, key


def test_a_reward_change_resets_delta_and_style() -> None:
    after = change("reward", "draft-confidence", chosen(delta=0.3, style=Style.CHAT))
    assert (after.settings.reward, after.settings.delta, after.extras.style) == (
        "draft-confidence",
        None,
        None,
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/delta", "usage: /delta VALUE"),
        ("/delta high", "δ must be a number, got 'high'"),
        ("/delta nan", "δ must be a finite number"),
        ("/weighting", "usage: /weighting NAME"),
        ("/weighting cosine", "unknown weighting 'cosine'; choose one of: binary, "),
        ("/weighting binary 1 2", "weighting binary takes δ, got '1 2'"),
        ("/weighting logistic -1", "α: Input should be greater than 0"),
        ("/weighting clip 1", "weighting clip takes no parameters, got '1'"),
        ("/steps word", "usage: /steps NAME; choose one of: paragraph (blank line)"),
        ("/mode fast", "unknown mode 'fast'; choose one of: rsd, target-only, draft-only, math, chat, auto"),
        ("/reward", "usage: /reward NAME [URL [MODEL]]; choose one of: arithmetic, "),
        ("/reward nosuch", "unknown reward 'nosuch'; choose one of: arithmetic, "),
        ("/system", "usage: /system PROMPT"),
    ],
)
def test_bad_values_are_one_line_errors(line: str, message: str) -> None:
    name, rest = parse_command(line)
    with pytest.raises(ConfigError) as caught:
        change(name, rest, CHOICE)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_invalid_weighting_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="p"):
        change("weighting", "constant 3", CHOICE).in_force(PROCESS)


def test_nudged_delta_steps_on_a_grid_and_stays_in_range() -> None:
    def nudged(delta: float | None, reward: ScriptedReward, direction: int) -> float:
        return nudged_delta(Settings(delta=delta), reward, direction)

    assert nudged(0.88, PROCESS, 1) == 0.9 and nudged(0.88, PROCESS, -1) == 0.85
    assert nudged(0.9, PROCESS, 1) == 0.95
    assert nudged(None, PROCESS, 1) == 0.75  # from the source's default
    assert nudged(1.0, PROCESS, 1) == 1.0 and nudged(0.0, PROCESS, -1) == 0.0
    assert nudged(None, OUTCOME, -1) == -0.5  # unbounded: coarser, no clamp


def test_describe_change() -> None:
    before = CHOICE.in_force(PROCESS)
    assert describe_change(before, chosen(delta=0.8).in_force(PROCESS)) == "δ 0.7 → 0.8"
    assert describe_change(before, before) == ""
    chat = chosen(style=Style.CHAT).in_force(PROCESS)
    assert describe_change(before, chat) == "style math → chat"  # the default prompt follows the style
    logistic = chosen(weighting="logistic").in_force(PROCESS)
    assert describe_change(before, logistic) == "weighting binary δ=0.7 → logistic α=10 δ=0.7"
    target = chosen(mode=Mode.TARGET_ONLY, system="Be terse.").in_force(PROCESS)
    assert describe_change(before, target) == "mode rsd → target-only; system prompt → 'Be terse.'"
    assert describe_change(target, chosen(mode=Mode.TARGET_ONLY).in_force(PROCESS)) == (
        "system prompt → the default"
    )
    assert before.to_dict()["weighting"] == {"name": "binary", "delta": 0.7}


def test_a_choice_round_trips_through_a_transcript() -> None:
    choice = chosen(mode=Mode.DRAFT_ONLY, weighting="logistic", delta=0.6, style=Style.CHAT, steps="line")
    assert Choice.from_dict(json.loads(json.dumps(choice.to_dict())), Settings()) == choice
    assert set(choice.to_dict()) == {
        *("reward", "mode", "weighting", "delta", "alpha", "p", "beta"),
        *("style", "system", "steps", "reward_url", "reward_model"),
    }  # the `knobs` of a transcript: the same keys as ever
    bad_ones: list[dict[str, object]] = [
        {"reward": 3},
        {"reward": "arithmetic", "delta": "high"},
        {"reward": "arithmetic", "weighting": "nope"},
        {"reward": "arithmetic", "mode": "warp"},
        {"reward": "arithmetic", "steps": "word"},
        {"reward": "arithmetic", "style": "poem"},
    ]
    for bad in bad_ones:
        with pytest.raises(ConfigError, match="bad settings in transcript"):
            Choice.from_dict(bad, Settings())


def test_every_command_has_one_runner() -> None:
    """The one table: a setting (`change`), the session's `command_<name>`, or the app's."""
    for name, spec in COMMANDS.items():
        on_session = hasattr(ChatSession, f"command_{name}")
        on_app = hasattr(RsdChatApp, f"command_{name}")
        if spec.runner == "setting":
            assert not on_session and not on_app, name
        elif spec.runner == "session":
            assert on_session, name
        else:
            assert on_app and not on_session, name
    app_only = [n for n in COMMANDS if hasattr(RsdChatApp, f"command_{n}") and COMMANDS[n].runner != "app"]
    assert app_only == ["model", "retry"]  # the app runs these in the background, as a typed question
