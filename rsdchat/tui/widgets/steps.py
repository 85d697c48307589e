"""The widgets of an answer: questions, steps as they stream in, rejected drafts, notes, the answer."""

from __future__ import annotations

import math

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.markup import escape
from textual.widget import Widget
from textual.widgets import Collapsible, Static
from textual.widgets.collapsible import CollapsibleTitle

from rsdchat.core.decision import Decision
from rsdchat.core.trace import Acceptance, verdict_word
from rsdchat.readable import latex_to_text, readable

AUTHOR_STYLE = {"draft": "bold cyan", "target": "bold magenta"}
HALF = 5  # cells of the reward bar on each side of δ
Bounds = tuple[float, float] | None  # the judging reward's range (None: unbounded)


def reward_bar(reward: float, delta: float | None, bounds: Bounds, half: int = HALF) -> Text:
    """The reward against δ: a bar centred on δ (the `┃`), growing right above it and left below.

    Its length is |r − δ| against the room the reward has on that side of δ (δ to the top
    of its range, or to the bottom); an unbounded reward's room is taken as ±4 around δ, the
    bar saturating smoothly. With no δ (a weighting without one) the bar fills the range.
    """
    bar = Text()
    if not math.isfinite(reward):
        return bar.append("░" * (2 * half + 1), "red")
    if delta is None:
        low, high = bounds if bounds is not None else (reward - 1.0, reward + 1.0)
        filled = round((min(high, max(low, reward)) - low) / ((high - low) or 1.0) * (2 * half + 1))
        return bar.append("█" * filled, "green").append("░" * (2 * half + 1 - filled), "grey50")
    diff = reward - delta
    if bounds is not None:
        room = (bounds[1] - delta) if diff >= 0 else (delta - bounds[0])
        share = min(1.0, abs(diff) / room) if room > 0 else 1.0
    else:
        share = math.tanh(abs(diff) / 2.0)
    size = 0 if diff == 0 else max(1, min(half, math.ceil(share * half - 1e-9)))
    colour = "green" if diff >= 0 else "red"
    left = size if diff < 0 else 0
    right = size if diff > 0 else 0
    bar.append("░" * (half - left), "grey50").append("█" * left, colour)
    bar.append("┃", "bold yellow")
    return bar.append("█" * right, colour).append("░" * (half - right), "grey50")


def score_text(decision: Decision, bounds: Bounds, *, verdict: bool = True) -> Text:
    """'r 0.9 ░░░░░┃████░ ≥ δ 0.7 · ω 1 · ✓ accepted' for a judged draft step.

    The decision is in words and signs (≥/<, ✓/✗, ω against the draw u), never in colour alone.
    """
    text = Text()
    if decision.invalid:
        return text.append(f"reward {decision.reward} is not a number · {verdict_word(False)}", "bold red")
    delta = decision.threshold
    sign = "≥" if delta is not None and decision.reward >= delta else "<"
    text.append(f"r {decision.reward:.3g} ")
    text.append_text(reward_bar(decision.reward, delta, bounds))
    if delta is not None:
        text.append(f" {sign} δ {delta:g}")
    text.append(f" · ω {decision.omega:.2g}")
    if decision.u is not None:  # a draw decided: accepted when ω ≥ u
        text.append(f" {'≥' if decision.omega >= decision.u else '<'} u {decision.u:.2f}")
    if not verdict:
        return text
    text.append(" · ")
    accepted = decision.accepted
    text.append(verdict_word(accepted), "bold green" if accepted else "bold red")
    return text


class UserView(Static):
    """A question from the user (one asked again says which turn it replaces in the context)."""

    def __init__(self, question: str, turn: int, retry_of: int | None = None) -> None:
        again = f" · asks #{retry_of} again (#{retry_of} is out of the context)" if retry_of else ""
        super().__init__(Text.assemble(("you ", "bold"), (f"#{turn}{again}\n", "dim"), question))


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
        self.bounds: Bounds = (0.0, 1.0)  # the range of the reward that judged it
        self.detail = ""  # the reward source's explanation, e.g. "1 of 2 equations wrong"
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
            text.append_text(score_text(self.decision, self.bounds))
            if self.detail and not self.decision.accepted:  # why it was rejected (the title says it later)
                text.append(f" · {self.detail}")
        elif self.score is not None:
            text.append(f" · r {self.score:.3g} (not judged)", "dim")
        return text

    def append(self, piece: str) -> None:
        """More of the step: drawn again whole, so math and Markdown show as they complete."""
        self.text += piece
        self._body.update(readable(self.text.strip("\n")) if self.text.strip() else "…")

    def show_decision(self, decision: Decision, bounds: Bounds, detail: str = "") -> None:
        self.decision, self.bounds, self.detail = decision, bounds, detail
        self.status = "" if decision.accepted else "rewritten by the target ↓"
        self._header.update(self._header_text())

    def stop(self) -> None:
        """The answer was stopped while this step was being written: keep what it has."""
        self.status = "stopped"
        self._header.update(self._header_text())

    def finish(self, text: str, tokens: int, accepted: bool, score: float | None = None) -> None:
        """The step is final: show the engine's text (authoritative), its size, a score it got."""
        self.text, self.score = text, score
        self._body.update(readable(text.strip("\n")) if text.strip() else "(empty step)")
        self.status = f"{tokens} tok"
        self.set_class(accepted, "-accepted")
        self.set_class(
            accepted and not text.strip(), "-blank"
        )  # nothing to read (the reply's end, a bare \n)
        self._header.update(self._header_text())


class RejectedDraft(Collapsible):
    """A rejected draft, collapsed above the target's rewrite: a click (or F6) opens it.

    Its title is no Tab stop, so Tab goes between the input and the transcript only.
    """

    def on_mount(self) -> None:
        self.query_one(CollapsibleTitle).can_focus = False


def rejected_view(
    index: int, text: str, decision: Decision | None, bounds: Bounds, detail: str = ""
) -> RejectedDraft:
    """A rejected draft, collapsed (expandable) above the target's replacement; its title says why
    (the reward against δ, and the reward source's finding: "1 of 2 equations wrong")."""
    title = Text(f"{verdict_word(False)} draft · step {index + 1}")
    if decision is not None:
        title.append(" · ")
        title.append_text(score_text(decision, bounds, verdict=False))
    if detail:
        title.append(f" · {detail}")
    body = Static(readable(text.strip("\n")) if text.strip() else "(empty step)", classes="step-body")
    return RejectedDraft(body, title=escape(title.plain), collapsed=True, classes="rejected")


class TurnView(Vertical):
    """The answer to one question: its steps, notes, the final answer and a summary line."""

    def __init__(self, turn: int, *children: Widget, classes: str = "") -> None:
        super().__init__(*children, classes=f"turn {classes}".strip())
        self.turn = turn
        self.current: StepView | None = None
        self.record: dict[str, object] | None = None  # the `answer` record, once it is finished


class AnswerBox(Static):
    """The final answer, framed (its math as Unicode: \\frac{3}{4} shows as 3/4); in no colour
    that says "right": rsdchat does not know whether it is."""

    def __init__(self, answer: str) -> None:
        super().__init__(Text(f"Answer: {latex_to_text(answer, math=True)}"))


def finish_line(
    reason: str,
    error: str | None,
    steps: int,
    drafts: int,
    accepted: int,
    seconds: float,
    context: str = "",
) -> Text:
    """'■ answered · 3 steps · drafts accepted 2/3 · 1.2 s': how the answer ended, never whether it is
    right (no ✓, no green: a final answer is not a checked one)."""
    said, style = {
        "answer": ("■ answered", "bold"),
        "eos": ("■ finished (eos: the model ended its reply)", "bold"),
        "cancelled": ("■ cancelled", "yellow"),
        "error": ("✗ error", "bold red"),
    }.get(reason, (f"• {reason}", "yellow"))
    text = Text(said, style)
    if error:
        text.append(f": {error}", style)
    text.append(f" · {steps} step{'s' * (steps != 1)}", "dim")
    if drafts:
        text.append(f" · {Acceptance(drafts, accepted).describe('finish')}", "dim")
    text.append(f" · {seconds:.1f} s", "dim")
    if context:  # whether the models see it in later questions
        text.append(f" · {context}", "yellow")
    return text
