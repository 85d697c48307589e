"""The chat app's pure parts: slash-command parsing, δ steps, reward bars, transcripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rsdchat.engine import Mode
from rsdchat.errors import ConfigError
from rsdchat.settings import MATH_SYSTEM_PROMPT, Settings
from rsdchat.testing import ScriptedReward
from rsdchat.tui.commands import change_knobs, describe_change, parse_command, split_path, summary
from rsdchat.tui.session import (
    CHAT_SYSTEM_PROMPT,
    Knobs,
    Style,
    Turn,
    messages_for,
    nudge_delta,
    policy_for,
    style_of,
    system_prompt,
)
from rsdchat.tui.transcript import Transcript, TranscriptError, to_markdown
from rsdchat.tui.view import scored_from_record
from rsdchat.tui.widgets import reward_bar

PROCESS = ScriptedReward(lambda c, s: 0.0, kind="process", default_delta=0.7)
OUTCOME = ScriptedReward(lambda c, s: 0.0, kind="outcome", default_delta=0.0)
KNOBS = Knobs(reward="scripted")


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
        ("/weighting binary", {"weighting": "binary"}),
        ("/weighting constant 0.3", {"weighting": "constant", "p": 0.3}),
        ("/weighting hybrid 2", {"weighting": "hybrid", "beta": 2.0}),
        ("/reward arithmetic * draft-confidence", {"reward": "arithmetic*draft-confidence"}),
        ("/mode target-only", {"mode": Mode.TARGET_ONLY}),
        ("/mode chat", {"style": Style.CHAT}),
        ("/mode auto", {"style": None}),
        ("/system Be terse.", {"system": "Be terse."}),
        ("/system default", {"system": None}),
    ],
)
def test_change_knobs(line: str, expected: dict[str, object]) -> None:
    name, rest = parse_command(line)
    knobs = change_knobs(name, rest, Knobs(reward="judge", delta=0.5, style=Style.MATH, system="x"))
    for key, value in expected.items():
        assert getattr(knobs, key) == value


def test_reward_change_resets_delta_and_style() -> None:
    knobs = change_knobs("reward", "judge", Knobs(reward="arithmetic", delta=0.3, style=Style.CHAT))
    assert (knobs.reward, knobs.delta, knobs.style) == ("judge", None, None)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/delta", "usage: /delta VALUE"),
        ("/delta high", "δ must be a number, got 'high'"),
        ("/delta inf", "δ must be a finite number"),
        ("/weighting", "usage: /weighting"),
        ("/weighting nope", "unknown weighting 'nope'; choose one of: binary, constant"),
        ("/weighting clip 1", "weighting clip takes no parameters, got '1'"),
        ("/weighting logistic 1 2 3", "weighting logistic takes α δ"),
        ("/mode fast", "unknown mode 'fast'; choose one of: rsd, target-only, draft-only, math, chat, auto"),
        ("/reward", "usage: /reward NAME; choose one of: target-logprob"),
        ("/system", "usage: /system PROMPT"),
    ],
)
def test_bad_values_are_one_line_errors(line: str, message: str) -> None:
    name, rest = parse_command(line)
    with pytest.raises(ConfigError) as caught:
        change_knobs(name, rest, KNOBS)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_invalid_weighting_value_is_refused_by_the_policy() -> None:
    with pytest.raises(ConfigError, match="p must be in"):
        policy_for(change_knobs("weighting", "constant 3", KNOBS), PROCESS, Settings())


def test_style_follows_the_reward_kind_unless_set() -> None:
    assert style_of(KNOBS, PROCESS) is Style.MATH and style_of(KNOBS, OUTCOME) is Style.CHAT
    assert style_of(Knobs(reward="x", style=Style.MATH), OUTCOME) is Style.MATH
    settings = Settings()
    math_policy, chat_policy = policy_for(KNOBS, PROCESS, settings), policy_for(KNOBS, OUTCOME, settings)
    assert math_policy.stop_at_answer and not chat_policy.stop_at_answer
    assert math_policy.weighting.describe() == "binary δ=0.7"
    assert chat_policy.weighting.describe() == "binary δ=0"
    assert system_prompt(KNOBS, PROCESS, settings) == MATH_SYSTEM_PROMPT
    assert system_prompt(KNOBS, OUTCOME, settings) == CHAT_SYSTEM_PROMPT
    custom = Settings(system_prompt="Mine.")
    assert system_prompt(KNOBS, OUTCOME, custom) == "Mine."  # a configured prompt is kept


def test_nudge_delta_steps_on_a_grid_and_stays_in_range() -> None:
    assert nudge_delta(Knobs(reward="x", delta=0.88), PROCESS, 1).delta == 0.9
    assert nudge_delta(Knobs(reward="x", delta=0.88), PROCESS, -1).delta == 0.85
    assert nudge_delta(Knobs(reward="x", delta=0.9), PROCESS, 1).delta == 0.95
    assert nudge_delta(KNOBS, PROCESS, 1).delta == 0.75  # from the source's default
    assert nudge_delta(Knobs(reward="x", delta=1.0), PROCESS, 1).delta == 1.0
    assert nudge_delta(Knobs(reward="x", delta=0.0), PROCESS, -1).delta == 0.0
    assert nudge_delta(KNOBS, OUTCOME, -1).delta == -0.5  # unbounded: coarser, no clamp


def test_describe_change() -> None:
    settings = Settings()
    old, new = KNOBS, Knobs(reward="scripted", delta=0.8)
    before, after = summary(old, PROCESS, settings), summary(new, PROCESS, settings)
    assert describe_change(before, after, old, new) == "δ 0.7 → 0.8"
    assert describe_change(before, before, old, old) == ""
    chat = Knobs(reward="scripted", style=Style.CHAT)
    text = describe_change(before, summary(chat, PROCESS, settings), old, chat)
    assert text == "style math → chat"  # the default prompt follows the style silently


def test_messages_skip_empty_turns() -> None:
    history = [Turn("q1", "a1"), Turn("q2", ""), Turn("q3", "a3")]
    messages = messages_for("sys", history, "q4")
    assert [(m.role, m.content) for m in messages] == [
        ("system", "sys"),
        ("user", "q1"),
        ("assistant", "a1"),
        ("user", "q3"),
        ("assistant", "a3"),
        ("user", "q4"),
    ]
    assert messages_for("", [], "q")[0].role == "user"


def test_reward_bar() -> None:
    assert reward_bar(0.9, 0.7, bounded=True).plain == "███████┃█░"
    assert reward_bar(0.2, 0.7, bounded=True).plain == "██░░░░░┃░░"
    assert reward_bar(1.0, None, bounded=True).plain == "█" * 10
    assert reward_bar(5.0, 0.0, bounded=False).plain == "░░░░░█████"  # far above δ
    assert reward_bar(-5.0, 0.0, bounded=False).plain == "█████┃░░░░"
    assert reward_bar(float("nan"), 0.7, bounded=True).plain == "░" * 10


def test_split_path() -> None:
    assert split_path("'my chat.jsonl'") == "my chat.jsonl"
    with pytest.raises(ConfigError, match="one path please"):
        split_path("a b")


def _write(path: Path, *records: object) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ((), "is not an rsdchat transcript"),
        (({"type": "user", "turn": 1, "content": "q"},), "no session line first"),
        (({"type": "session", "version": 99},), "transcript version 99 is not supported"),
        (({"type": "session", "version": 1}, {"type": "step", "turn": 1}), ":2: step record without"),
        (({"type": "session", "version": 1}, {"type": "mystery"}), ":2: unknown record type 'mystery'"),
        (({"type": "session", "version": 1}, [1, 2]), ":2: not a transcript record"),
    ],
)
def test_broken_transcripts_name_file_and_line(tmp_path: Path, records: tuple[object], message: str) -> None:
    path = _write(tmp_path / "t.jsonl", *records)
    with pytest.raises(TranscriptError, match=message):
        Transcript.load(path)


def test_transcript_roundtrip_history_and_knobs(tmp_path: Path) -> None:
    transcript = Transcript.start(Settings(), KNOBS, {"draft": "d"})
    assert not transcript.unsaved
    transcript.add({"type": "user", "turn": 1, "content": "q1"})
    transcript.add({"type": "change", "text": "δ 0.7 → 0.9", "knobs": {**KNOBS.to_dict(), "delta": 0.9}})
    transcript.add({"type": "answer", "turn": 1, "content": "a1", "finish_reason": "answer"})
    assert transcript.unsaved
    transcript.save(tmp_path / "sub" / "t.jsonl")
    assert not transcript.unsaved
    loaded = Transcript.load(tmp_path / "sub" / "t.jsonl")
    assert loaded.history() == [Turn("q1", "a1")] and loaded.turns == 1
    saved = loaded.knobs()
    assert saved is not None and Knobs.from_dict(saved).delta == 0.9
    with pytest.raises(ConfigError, match="bad settings in transcript"):
        Knobs.from_dict({"reward": "x", "mode": "warp"})


def test_markdown_export() -> None:
    records: list[dict[str, Any]] = [
        {"type": "session", "started": "now", "models": {"draft": "d", "target": "t"}},
        {"type": "user", "turn": 1, "content": "What is 2+2?"},
        {
            "type": "step",
            "index": 0,
            "author": "draft",
            "text": "wrong\n\n",
            "reward": 0.2,
            "omega": 0.0,
            "accepted": False,
            "weighting": "binary δ=0.7",
        },
        {"type": "step", "index": 0, "author": "target", "text": "\\boxed{4}", "accepted": True},
        {
            "type": "answer",
            "turn": 1,
            "content": "\\boxed{4}",
            "finish_reason": "answer",
            "final_answer": "4",
            "drafts": 1,
            "accepted_drafts": 0,
        },
    ]
    markdown = to_markdown(records)
    assert "draft **d** · target **t**" in markdown
    assert "<details><summary>✗ step 1 · draft · r 0.2 · ω 0 · rejected · binary δ=0.7</summary>" in markdown
    assert "<sub>step 1 · target</sub>\n\n\\boxed{4}" in markdown
    assert "**Answer: 4**" in markdown and "*ended: answer · 0/1 drafts accepted*" in markdown


def test_saved_scores_are_redrawn() -> None:
    scored = scored_from_record(
        {"reward": 0.4, "omega": 0.0, "accepted": False, "weighting": "logistic α=10 δ=0.65"}
    )
    assert scored is not None and scored.delta == 0.65 and not scored.accepted and scored.bounded
    assert scored_from_record({"reward": None}) is None
    nan = scored_from_record({"reward": "nan", "reward_invalid": True, "reward_kind": "outcome"})
    assert nan is not None and nan.invalid and not nan.bounded
