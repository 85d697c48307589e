"""The widgets of an answer: questions, steps as they stream in, rejected drafts, notes, the answer."""

from __future__ import annotations

import math

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.markup import escape
from textual.widget import Widget
from textual.widgets import Collapsible, Static

from rsdchat.decision import Decision

AUTHOR_STYLE = {"draft": "bold cyan", "target": "bold magenta"}
BAR_WIDTH = 10


def reward_bar(reward: float, delta: float | None, bounded: bool, width: int = BAR_WIDTH) -> Text:
    """A small bar: the reward against δ (a [0, 1] scale, or centred on δ when unbounded)."""
    bar = Text()
    if not math.isfinite(reward):
        return bar.append("░" * width, "red")
    ok = delta is None or reward >= delta
    colour = "green" if ok else "red"
    if bounded:
        filled = round(min(1.0, max(0.0, reward)) * width)
        mark = None if delta is None else min(width - 1, max(0, round(delta * width)))
        for cell in range(width):
            char, style = ("█", colour) if cell < filled else ("░", "grey50")
            if cell == mark:
                char, style = ("┃", "bold yellow")
            bar.append(char, style)
        return bar
    half = width // 2
    centre = delta if delta is not None else 0.0
    size = round(math.tanh((reward - centre) / 2.0) * half)
    for cell in range(width):
        offset = cell - half
        inside = 0 <= offset < size if size > 0 else size <= offset < 0
        bar.append(
            "┃" if offset == 0 and not inside else "█" if inside else "░", colour if inside else "grey50"
        )
    return bar


def score_text(decision: Decision, bounded: bool, *, verdict: bool = True) -> Text:
    """'r 0.9 ██████┃░░ ≥ δ 0.7 · ω 1 · ✓ accepted' for a judged draft step."""
    text = Text()
    if decision.invalid:
        return text.append(f"reward {decision.reward} is not a number · rejected", "bold red")
    delta = decision.threshold
    sign = "≥" if delta is not None and decision.reward >= delta else "<"
    text.append(f"r {decision.reward:.3g} ")
    text.append_text(reward_bar(decision.reward, delta, bounded))
    if delta is not None:
        text.append(f" {sign} δ {delta:g}")
    text.append(f" · ω {decision.omega:.2g}")
    if decision.u is not None:
        text.append(f" (u {decision.u:.2f})", "dim")
    if not verdict:
        return text
    text.append(" · ")
    accepted = decision.accepted
    text.append("✓ accepted" if accepted else "✗ rejected", "bold green" if accepted else "bold red")
    return text


class UserView(Static):
    """A question from the user."""

    def __init__(self, question: str, turn: int) -> None:
        super().__init__(Text.assemble(("you ", "bold"), (f"#{turn}\n", "dim"), question))


class NoteLine(Static):
    """A setting changed here (recorded in the transcript at this point)."""

    def __init__(self, text: str, note: int = 0) -> None:
        super().__init__(Text.assemble(("⚙ ", "yellow"), text), classes="note")
        self.text, self.note = text, note

    def retext(self, text: str) -> None:
        self.text = text
        self.update(Text.assemble(("⚙ ", "yellow"), text))


class StepView(Vertical):
    """One step: streams token by token, then shows its reward and the decision."""

    def __init__(self, index: int, author: str) -> None:
        super().__init__(classes=f"step -{author}")
        self.index, self.author = index, author
        self.text = ""
        self.decision: Decision | None = None
        self.score: float | None = None  # a reward shown but not decided on (a target step)
        self.bounded = True  # the reward that judged it lives in a bounded range
        self.status = "writing…"
        self._header = Static(self._header_text(), classes="step-header")
        self._body = Static("", classes="step-body", markup=False)

    def compose(self) -> ComposeResult:
        yield self._header
        yield self._body

    def _header_text(self) -> Text:
        text = Text.assemble(
            (self.author, AUTHOR_STYLE.get(self.author, "bold")), f" · step {self.index + 1}"
        )
        if self.status:
            text.append(f" · {self.status}", "dim")
        if self.decision is not None:
            text.append(" · ")
            text.append_text(score_text(self.decision, self.bounded))
        elif self.score is not None:
            text.append(f" · r {self.score:.3g} (not judged)", "dim")
        return text

    def append(self, piece: str) -> None:
        self.text += piece
        self._body.update(self.text.rstrip("\n") or "…")

    def show_decision(self, decision: Decision, bounded: bool) -> None:
        self.decision, self.bounded = decision, bounded
        self.status = "" if decision.accepted else "rewritten by the target ↓"
        self._header.update(self._header_text())

    def stop(self) -> None:
        """The answer was stopped while this step was being written: keep what it has."""
        self.status = "stopped"
        self._header.update(self._header_text())

    def finish(self, text: str, tokens: int, accepted: bool, score: float | None = None) -> None:
        """The step is final: show the engine's text (authoritative), its size, a score it got."""
        self.text, self.score = text, score
        self._body.update(text.rstrip("\n") or "(empty step)")
        self.status = f"{tokens} tok"
        self.set_class(accepted, "-accepted")
        self._header.update(self._header_text())


def rejected_view(index: int, text: str, decision: Decision | None, bounded: bool) -> Collapsible:
    """A rejected draft, collapsed (expandable) above the target's replacement."""
    title = Text(f"✗ rejected draft · step {index + 1}")
    if decision is not None:
        title.append(" · ")
        title.append_text(score_text(decision, bounded, verdict=False))
    body = Static(text.rstrip("\n") or "(empty step)", classes="step-body", markup=False)
    return Collapsible(body, title=escape(title.plain), collapsed=True, classes="rejected")


class TurnView(Vertical):
    """The answer to one question: its steps, notes, the final answer and a summary line."""

    def __init__(self, turn: int, *children: Widget, classes: str = "") -> None:
        super().__init__(*children, classes=f"turn {classes}".strip())
        self.turn = turn
        self.current: StepView | None = None


class AnswerBox(Static):
    """The final answer, highlighted."""


def finish_line(
    reason: str, error: str | None, steps: int, drafts: int, accepted: int, seconds: float
) -> Text:
    icon, style = {
        "answer": ("✓", "green"),
        "eos": ("✓", "green"),
        "cancelled": ("■", "yellow"),
        "error": ("✗", "bold red"),
    }.get(reason, ("•", "yellow"))
    text = Text.assemble((f"{icon} {reason}", style))
    if error:
        text.append(f": {error}", style)
    text.append(f" · {steps} step{'s' * (steps != 1)}", "dim")
    if drafts:
        text.append(f" · drafts accepted {accepted}/{drafts}", "dim")
    text.append(f" · {seconds:.1f} s", "dim")
    return text
