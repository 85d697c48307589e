"""The widgets of the chat: questions, steps as they stream in, rejected drafts, notes, status."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.markup import escape
from textual.widget import Widget
from textual.widgets import Collapsible, Static

from rsdchat.tui.session import CostMeter

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


@dataclass(frozen=True)
class Scored:
    """What the step header shows once a step is scored."""

    reward: float
    omega: float
    accepted: bool
    delta: float | None  # δ of the weighting in force, if it has one
    bounded: bool  # the reward lives in [0, 1]
    u: float | None = None
    invalid: bool = False


def score_text(scored: Scored, *, verdict: bool = True) -> Text:
    text = Text()
    if scored.invalid:
        return text.append(f"reward {scored.reward} is not a number · rejected", "bold red")
    sign = "≥" if scored.delta is not None and scored.reward >= scored.delta else "<"
    text.append(f"r {scored.reward:.3g} ")
    text.append_text(reward_bar(scored.reward, scored.delta, scored.bounded))
    if scored.delta is not None:
        text.append(f" {sign} δ {scored.delta:g}")
    text.append(f" · ω {scored.omega:.2g}")
    if scored.u is not None:
        text.append(f" (u {scored.u:.2f})", "dim")
    if not verdict:
        return text
    text.append(" · ")
    text.append(
        "✓ accepted" if scored.accepted else "✗ rejected", "bold green" if scored.accepted else "bold red"
    )
    return text


class UserView(Static):
    """A question from the user."""

    def __init__(self, question: str, turn: int) -> None:
        super().__init__(Text.assemble(("you ", "bold"), (f"#{turn}\n", "dim"), question))


class NoteLine(Static):
    """A setting changed here (recorded in the transcript at this point)."""

    def __init__(self, text: str) -> None:
        super().__init__(Text.assemble(("⚙ ", "yellow"), text), classes="note")
        self.text = text

    def retext(self, text: str) -> None:
        self.text = text
        self.update(Text.assemble(("⚙ ", "yellow"), text))


class StepView(Vertical):
    """One step: streams token by token, then shows its reward and the decision."""

    def __init__(self, index: int, author: str) -> None:
        super().__init__(classes=f"step -{author}")
        self.index, self.author = index, author
        self.text = ""
        self.scored: Scored | None = None
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
        if self.scored is not None:
            text.append(" · ")
            text.append_text(score_text(self.scored))
        return text

    def append(self, piece: str) -> None:
        self.text += piece
        self._body.update(self.text.rstrip("\n") or "…")

    def show_score(self, scored: Scored) -> None:
        self.scored = scored
        self.status = "" if scored.accepted else "rewritten by the target ↓"
        self._header.update(self._header_text())

    def stop(self) -> None:
        """The answer was stopped while this step was being written: keep what it has."""
        self.status = "stopped"
        self._header.update(self._header_text())

    def finish(self, text: str, tokens: int, accepted: bool) -> None:
        """The step is final: show the engine's text (authoritative) and its size."""
        self.text = text
        self._body.update(text.rstrip("\n") or "(empty step)")
        self.status = f"{tokens} tok"
        self.set_class(accepted, "-accepted")
        self._header.update(self._header_text())


def rejected_view(index: int, text: str, scored: Scored | None) -> Collapsible:
    """A rejected draft, collapsed (expandable) above the target's replacement."""
    title = Text(f"✗ rejected draft · step {index + 1}")
    if scored is not None:
        title.append(" · ")
        title.append_text(score_text(scored, verdict=False))
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


def _si(value: float) -> str:
    for limit, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def cost_table(meter: CostMeter) -> Table:
    table = Table(box=None, padding=(0, 1), show_edge=False, expand=False)
    for column in ("cost", "tokens", "FLOPs", "s"):
        table.add_column(column, justify="left" if column == "cost" else "right")
    for role, totals in meter.roles.items():
        table.add_row(role.value, _si(totals.tokens), _si(totals.flops), f"{totals.seconds:.1f}")
    flops = sum(t.flops for t in meter.roles.values())
    seconds = sum(t.seconds for t in meter.roles.values())
    table.add_row(Text("total", "bold"), "", _si(flops), f"{seconds:.1f}")
    return table


class StatusPanel(Static):
    """Who does what, the policy in force, the acceptance rate and the running cost."""

    def show(self, rows: list[tuple[str, str]], meter: CostMeter, state: str) -> None:
        table = Table(box=None, padding=(0, 1), show_header=False, show_edge=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for key, value in rows:
            table.add_row(key, Text(value))  # Text: a model named "x[q4]" is not markup
        parts: list[RenderableType] = [table, Text(""), cost_table(meter), Text(""), Text(state, "italic")]
        self.update(Group(*parts))
