"""The chat's pure parts: paths, transcripts, reward bars, the help, readable text."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from rsdchat.chat.choice import Choice
from rsdchat.chat.commands import COMMANDS, split_path
from rsdchat.chat.transcript import Transcript, TranscriptError, decision_of, to_markdown
from rsdchat.core.decision import Decision
from rsdchat.core.errors import ConfigError
from rsdchat.core.weighting import BinaryStep, Logistic
from rsdchat.prompts import Turn, build_messages
from rsdchat.readable import ANSWER_STYLE, latex_to_text, readable, readable_text, segments
from rsdchat.settings import Settings
from rsdchat.testing import ScriptedReward
from rsdchat.tui.screens.help import GLOSSARY, KEYS, help_table
from rsdchat.tui.widgets.prompt import one_style
from rsdchat.tui.widgets.steps import finish_line, rejected_view, reward_bar, score_text
from rsdchat.tui.widgets.welcome import welcome_text

PROCESS = ScriptedReward(lambda c, s: 0.0, kind="process", default_delta=0.7)
OUTCOME = ScriptedReward(lambda c, s: 0.0, kind="outcome", default_delta=0.0, bounds=None)
CHOICE = Choice(Settings())


def test_messages_skip_empty_turns() -> None:
    history = [Turn("q1", "a1"), Turn("q2", ""), Turn("q3", "a3")]
    messages = build_messages("sys", "q4", history)
    assert [(m.role, m.content) for m in messages] == [
        ("system", "sys"),
        ("user", "q1"),
        ("assistant", "a1"),
        ("user", "q3"),
        ("assistant", "a3"),
        ("user", "q4"),
    ]
    assert build_messages("", "q")[0].role == "user"


def test_reward_bar_is_centred_on_delta_and_scaled_to_the_room_on_each_side() -> None:
    assert reward_bar(0.9, 0.7, (0.0, 1.0)).plain == "░░░░░┃████░"  # 0.2 of the 0.3 above δ
    assert reward_bar(1.0, 0.7, (0.0, 1.0)).plain == "░░░░░┃█████"  # the top of the range: full
    assert reward_bar(0.71, 0.7, (0.0, 1.0)).plain == "░░░░░┃█░░░░"  # just above: still a cell
    assert reward_bar(0.7, 0.7, (0.0, 1.0)).plain == "░░░░░┃░░░░░"  # exactly δ
    assert reward_bar(0.2, 0.7, (0.0, 1.0)).plain == "░████┃░░░░░"  # 0.5 of the 0.7 below δ
    assert reward_bar(0.0, 0.7, (0.0, 1.0)).plain == "█████┃░░░░░"
    assert reward_bar(5.0, 0.0, None).plain == "░░░░░┃█████"  # unbounded, far above δ
    assert reward_bar(-0.5, 0.0, None).plain == "░░░██┃░░░░░"  # unbounded, a little below
    assert reward_bar(-5.0, 0.0, None).plain == "█████┃░░░░░"
    assert reward_bar(0.5, None, (0.0, 1.0)).plain == "██████░░░░░"  # no δ: the range filled
    assert reward_bar(float("nan"), 0.7, (0.0, 1.0)).plain == "░" * 11


def test_the_decision_is_readable_without_colour() -> None:
    kept = Decision(0.9, 1.0, accepted=True, weighting=BinaryStep(0.7))
    rejected = Decision(0.65, 0.0, accepted=False, weighting=BinaryStep(0.7))
    for decision, words in ((kept, ("≥ δ 0.7", "✓ accepted")), (rejected, ("< δ 0.7", "✗ rejected"))):
        plain = Console(width=200, color_system=None, record=True)
        plain.print(score_text(decision, (0.0, 1.0)))
        text = plain.export_text()
        assert all(word in text for word in words), text


def test_score_text() -> None:
    kept = Decision(0.9, 1.0, accepted=True, weighting=BinaryStep(0.7))
    assert score_text(kept, (0.0, 1.0)).plain == "r 0.9 ░░░░░┃████░ ≥ δ 0.7 · ω 1 · ✓ accepted"
    drawn = Decision(0.6, 0.27, accepted=False, weighting=Logistic(10.0, 0.7), u=0.5)
    assert score_text(drawn, (0.0, 1.0), verdict=False).plain == "r 0.6 ░░░░█┃░░░░░ < δ 0.7 · ω 0.27 < u 0.50"
    lucky = Decision(0.6, 0.27, accepted=True, weighting=Logistic(10.0, 0.7), u=0.2)
    assert "ω 0.27 ≥ u 0.20 · ✓ accepted" in score_text(lucky, (0.0, 1.0)).plain
    invalid = Decision(math.nan, 0.0, accepted=False, weighting=BinaryStep(0.7), invalid=True)
    assert score_text(invalid, (0.0, 1.0)).plain == "reward nan is not a number · ✗ rejected"


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
        (({"type": "session", "version": 1},), "transcript version 1 is not supported"),
        (({"type": "session", "version": 2}, {"type": "step", "turn": 1}), ":2: step record without"),
        (({"type": "session", "version": 2}, {"type": "mystery"}), ":2: unknown record type 'mystery'"),
        (({"type": "session", "version": 2}, [1, 2]), ":2: not a transcript record"),
        (
            (
                {"type": "session", "version": 2},
                {"type": "step", "turn": 1, "index": 0, "author": "me", "text": ""},
            ),
            ":2: step author must be draft or target",
        ),
    ],
)
def test_broken_transcripts_name_file_and_line(tmp_path: Path, records: tuple[object], message: str) -> None:
    path = _write(tmp_path / "t.jsonl", *records)
    with pytest.raises(TranscriptError, match=message):
        Transcript.load(path)


def test_transcript_roundtrip_history_knobs_and_totals(tmp_path: Path) -> None:
    transcript = Transcript.start(CHOICE, {"draft": "d"})
    assert not transcript.unsaved
    transcript.add({"type": "user", "turn": 1, "content": "q1"})
    transcript.add({"type": "change", "text": "δ 0.7 → 0.9", "knobs": {**CHOICE.to_dict(), "delta": 0.9}})
    decision = Decision(0.2, 0.0, accepted=False, weighting=BinaryStep(0.7))
    transcript.add(
        {
            "type": "step",
            "turn": 1,
            "index": 0,
            "author": "draft",
            "text": "x",
            "decision": decision.to_dict(),
        }
    )
    cost = {"draft": {"prefill_tokens": 1, "generated_tokens": 2, "flops": 6.0, "seconds": 0.1}}
    transcript.add({"type": "answer", "turn": 1, "content": "a1", "finish_reason": "answer", "cost": cost})
    assert transcript.unsaved
    transcript.save(tmp_path / "sub" / "t.jsonl")
    assert not transcript.unsaved
    loaded = Transcript.load(tmp_path / "sub" / "t.jsonl")
    assert loaded.records == transcript.records and loaded.path == tmp_path / "sub" / "t.jsonl"
    assert loaded.history() == [Turn("q1", "a1")] and loaded.turns == 1
    saved = loaded.chosen()
    assert saved is not None and Choice.from_dict(saved, Settings()).settings.delta == 0.9
    spent, acceptance = loaded.totals()
    assert spent.flops == 6.0 and (acceptance.judged, acceptance.accepted) == (1, 0)
    assert loaded.other_models({"draft": "d"}) == [] and loaded.other_models({"draft": "e"}) == [
        "draft d (now e)"
    ]


def test_saved_decisions_are_read_back() -> None:
    decision = Decision(0.4, 0.12, accepted=False, weighting=Logistic(10.0, 0.65), u=0.3)
    assert decision_of({"decision": decision.to_dict()}) == decision
    assert decision_of({"decision": None}) is None and decision_of({}) is None
    assert decision_of({"decision": {"reward": 0.4}}) is None  # incomplete: shown without a score
    assert decision_of({"decision": {**decision.to_dict(), "weighting": {"name": "nope"}}}) is None
    invalid = decision_of({"decision": {**decision.to_dict(), "reward": None, "invalid": True}})
    assert invalid is not None and invalid.invalid and math.isnan(invalid.reward)


def test_markdown_export() -> None:
    rejected = Decision(0.2, 0.0, accepted=False, weighting=BinaryStep(0.7))
    records: list[dict[str, Any]] = [
        {"type": "session", "started": "now", "models": {"draft": "d", "target": "t"}},
        {"type": "user", "turn": 1, "content": "What is 2+2?"},
        {"type": "step", "index": 0, "author": "draft", "text": "wrong\n\n", "accepted": False},
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
    records[2]["decision"] = rejected.to_dict()
    markdown = to_markdown(records)
    assert "draft **d** · target **t**" in markdown
    assert "<details><summary>✗ step 1 · draft · r 0.2 · ω 0 · rejected · binary δ=0.7</summary>" in markdown
    assert "<sub>step 1 · target</sub>\n\n\\boxed{4}" in markdown
    assert "**Answer: 4**" in markdown and "*ended: answer · 0/1 drafts accepted*" in markdown


def test_the_help_lists_every_command_and_key() -> None:
    console = Console(width=200, record=True)
    console.print(help_table())
    text = console.export_text()
    for spec in COMMANDS.values():
        assert spec.usage in text and spec.help in text
    for key, what in KEYS:
        assert key in text and what in text
    assert "binary [δ] · constant [p] · clip · sigmoidal · logistic [α δ]" in text  # not markup
    for word, meaning in GLOSSARY:
        assert f"{word:<3}  {meaning}" in text


def test_the_help_explains_each_word_in_one_line_at_80_columns() -> None:
    assert [word for word, _ in GLOSSARY] == ["rsd", "r", "δ", "ω", "eos"]
    assert all(len(meaning) <= 66 for _, meaning in GLOSSARY)  # the help box at 80 columns: 71 inside


def test_the_welcome_fits_80x24() -> None:
    lines = welcome_text().plain.split("\n")
    assert len(lines) <= 15 and max(len(line) for line in lines) <= 72


def test_the_finish_line_says_how_the_answer_ended_not_whether_it_is_right() -> None:
    answered = finish_line("answer", None, 3, 3, 2, 1.25)
    assert answered.plain == "■ answered · 3 steps · drafts accepted 2/3 · 1.2 s"
    assert "✓" not in answered.plain and "green" not in str(answered.spans)
    assert finish_line("eos", None, 1, 0, 0, 0.5).plain.startswith(
        "■ finished (eos: the model ended its reply)"
    )
    assert finish_line("error", "out of memory", 1, 0, 0, 0.5).plain.startswith("✗ error: out of memory")
    assert finish_line("max_steps", None, 9, 0, 0, 0.5).plain.startswith("• max_steps")


def test_a_rejected_draft_says_why() -> None:
    rejected = Decision(0.2, 0.0, accepted=False, weighting=BinaryStep(0.7))
    view = rejected_view(1, "2+2=5", rejected, (0.0, 1.0), "1 of 2 equations wrong")
    assert str(view.title).endswith("< δ 0.7 · ω 0 · 1 of 2 equations wrong")
    assert str(rejected_view(1, "x", None, None).title) == "✗ rejected draft · step 2"


def test_a_paste_keeps_its_line_breaks_in_one_style() -> None:
    assert one_style("a\r\nb\rc\nd") == "a\nb\nc\nd"


# -- readable replies (rsdchat.readable): math as Unicode, Markdown, the boxed answer ------------


def rendered(text: str, width: int = 80) -> str:
    console = Console(width=width, color_system=None, record=True)
    console.print(readable(text))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


@pytest.mark.parametrize(
    ("latex", "text"),
    [
        ("\\(\\frac{3}{4}\\)", "3/4"),
        ("\\(\\frac{a+b}{c+d}\\)", "(a+b)/(c+d)"),
        ("\\dfrac{48}{2} = 24", "48/2 = 24"),
        ("$x^2 + y_{10}$", "x² + y₁₀"),
        ("$e^{i\\pi}$", "e^(iπ)"),
        ("\\(\\sqrt{2}\\approx 1.41\\)", "√2 ≈ 1.41"),
        ("\\( 90^\\circ \\)", "90°"),
        ("\\(3 \\times 4 \\cdot 5 \\le 60\\)", "3 × 4 · 5 ≤ 60"),
        ("\\(5\\,\\text{km}\\)", "5 km"),
        ("\\boxed{\\frac{1}{2}}", "1/2"),
        ("\\(15\\%\\) of 240", "15% of 240"),
    ],
)
def test_latex_to_text(latex: str, text: str) -> None:
    assert latex_to_text(latex) == text


@pytest.mark.parametrize(
    "prose",
    [
        "What is 15% of 240? It is 36.",  # a % outside math is not a LaTeX comment
        "cost is $5 and $6 more",  # dollar amounts are not math
        "A & B ~ C {x: 1}",
        "C:\\Users\\me",  # not a known command: left alone
        "use `\\frac{a}{b}` as written",  # code is shown as written
    ],
)
def test_prose_and_code_keep_their_characters(prose: str) -> None:
    assert latex_to_text(prose) == prose


def test_unfinished_math_is_shown_raw_until_it_is_complete() -> None:
    assert segments("Half is \\[ \\frac{48}{")[-1] == ("raw", "\\[ \\frac{48}{")
    assert latex_to_text("Half is \\[ \\frac{48}{") == "Half is \\[ \\frac{48}{"
    assert segments("so \\frac{1}{")[-1] == ("raw", "\\frac{1}{")
    assert "\\frac{48}{" in rendered("Half is \\[ \\frac{48}{")  # drawn, not an error
    assert latex_to_text("Half is \\[ \\frac{48}{2} \\]") == "Half is\n48/2"
    assert latex_to_text("x^{", math=True) == "x^{"  # pylatexenc cannot read it: as it is


def test_readable_renders_markdown_and_display_math_on_its_own_line() -> None:
    shown = rendered("**Step 1:** half of 48:\n\\[ \\frac{48}{2} = 24 \\]\nso *May* is 24.\n\n- one\n- two")
    assert shown.splitlines()[:3] == ["Step 1: half of 48:", "48/2 = 24", "so May is 24."]
    assert "• one" in shown and "**" not in shown
    assert rendered("a < b and 2 * 3 * 4 and x_1") == "a < b and 2 * 3 * 4 and x_1"
    assert rendered("\\(a * b\\) and \\(<x>\\)") == "a * b and <x>"  # converted math is not Markdown


def test_the_boxed_answer_is_highlighted() -> None:
    text = readable_text("So the answer is \\(\\boxed{72}\\).")
    assert text.plain == "So the answer is 72."
    assert [(text.plain[span.start : span.end], str(span.style)) for span in text.spans] == [
        ("72", ANSWER_STYLE)
    ]
    console = Console(width=60, color_system="truecolor", force_terminal=True, record=True)
    console.print(readable("Thus \\[ \\boxed{72} \\]"))
    assert "\x1b[1;32m72" in console.export_text(styles=True)  # bold green in the Markdown view too
