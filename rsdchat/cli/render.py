"""How a solve looks: live steps for people, one JSON object per question for scripts."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from rsdchat.core.decision import Decision
from rsdchat.core.events import Event, StepDone, StepScored, StepStarted, TokenText
from rsdchat.core.trace import Trace, verdict_word
from rsdchat.core.types import Role
from rsdchat.evaluation.grading import is_correct
from rsdchat.readable import readable
from rsdchat.units import si

STYLE = {Role.DRAFT: "cyan", Role.TARGET: "magenta"}
LABEL = {Role.DRAFT: "draft ", Role.TARGET: "target"}


def format_reward(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if math.isfinite(value) else str(value)


class LivePrinter:
    """An event sink that shows each step as it streams (math and Markdown rendered), then its decision."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live: Live | None = None
        self._role = Role.DRAFT
        self._text = ""
        self._open = False  # a step started and not shown to the end yet

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepStarted):
            self._close()
            self._role, self._text, self._open = event.author, "", True
            if self.console.is_terminal:  # a file or pipe gets each step once, when it is done
                self._live = Live(self._frame(), console=self.console, auto_refresh=False, transient=False)
                self._live.start()
        elif isinstance(event, TokenText):
            self._text += event.text
            if self._live is not None:
                self._live.update(self._frame(), refresh=True)
        elif isinstance(event, StepScored):
            self._close()
            self.console.print(verdict(event.decision, event.detail))
        elif isinstance(event, StepDone):
            self._close()

    def _frame(self) -> Table:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True, width=8)
        grid.add_column()
        body = readable(self._text.strip("\n"), style=STYLE[self._role])
        grid.add_row(Text(f"{LABEL[self._role]} │", style=f"bold {STYLE[self._role]}"), body)
        return grid

    def _close(self) -> None:
        if self._live is not None:
            self._live.update(self._frame(), refresh=True)
            self._live.stop()
            self._live = None
        elif self._open:
            self.console.print(self._frame())
        self._open = False


def verdict(decision: Decision, detail: str = "") -> Text:
    """'✓ accepted · reward 0.93 · ω 1.00' under a judged draft step, with the reward's reason."""
    if decision.invalid:
        return Text(f"         ✗ the reward is not a number: {verdict_word(False, sign=False)}", style="red")
    shown = f"reward {format_reward(decision.reward)} · ω {decision.omega:.2f}"
    if decision.u is not None:
        shown += f" · u {decision.u:.2f}"
    if detail:
        shown += f" · {detail}"
    if decision.accepted:
        return Text(f"         {verdict_word(True)} · {shown}", style="green")
    return Text(f"         {verdict_word(False)} · {shown} → the target rewrites this step", style="red")


def print_summary(console: Console, trace: Trace, described: dict[str, str]) -> None:
    """The answer, why it ended, and the measured cost per role (an error went to stderr, once)."""
    answer = trace.final_answer
    console.print()
    console.print(
        Text.assemble(
            ("answer: ", "bold"),
            (answer or "(no final answer)", "bold" if answer else "yellow"),  # not green: it is not checked
            (f"   finished: {trace.finish_reason}", "dim"),
        )
    )
    acceptance = trace.acceptance.describe()
    if acceptance:
        console.print(acceptance)
    table = Table(title=None, show_edge=False, header_style="bold")
    for column in ("role", "model", "prefill tok", "generated tok", "FLOPs", "seconds"):
        table.add_column(column, justify="left" if column in ("role", "model") else "right")
    for role in Role:
        cost = trace.ledger.cost(role)
        if not cost.prefill_tokens and not cost.generated_tokens and not cost.seconds:
            continue
        table.add_row(
            role.value,
            described.get(role.value, ""),
            str(cost.prefill_tokens),
            str(cost.generated_tokens),
            si(cost.flops, "FLOP"),
            f"{cost.seconds:.2f}",
        )
    table.add_row("total", "", "", "", si(trace.ledger.flops, "FLOP"), f"{trace.seconds:.2f}")
    console.print(table)
    unsized = [role.value for role in Role if role in trace.ledger.unsized]
    if unsized:
        settings = ", ".join(f"{role}_params" for role in unsized)
        console.print(
            Text(
                f"FLOPs unknown: rsdchat cannot size the {' and '.join(unsized)} model"
                f"{'s' if len(unsized) > 1 else ''}; set {settings} (e.g. 1.5B)",
                style="dim",
            )
        )


def record(
    trace: Trace, *, question_id: str, reference: str | None, settings: dict[str, Any]
) -> dict[str, Any]:
    """The --json object for one question."""
    result: dict[str, Any] = {
        "id": question_id,
        "answer": trace.final_answer,
        "status": "error" if trace.finish_reason == "error" else "ok",
        **trace.to_dict(),
        "settings": settings,
    }
    del result["final_answer"]
    if reference:
        result["reference"] = reference
        result["correct"] = is_correct(trace.text, reference)
    return result
