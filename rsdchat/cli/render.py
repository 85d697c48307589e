"""How a solve looks: live steps for people, one JSON object per question for scripts."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rsdchat.evaluation.grading import is_correct
from rsdchat.events import Event, StepDone, StepScored, StepStarted, TokenText
from rsdchat.trace import Trace
from rsdchat.types import Role
from rsdchat.units import si

STYLE = {Role.DRAFT: "cyan", Role.TARGET: "magenta"}
LABEL = {Role.DRAFT: "draft ", Role.TARGET: "target"}


def format_reward(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if math.isfinite(value) else str(value)


class LivePrinter:
    """An event sink that writes steps as they stream, then each decision under its step."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._newlines = ""  # trailing blank lines are held back until more text follows
        self._role = Role.DRAFT
        self._scored = False  # the current step got a StepScored (its line is already closed)
        self._fresh = True  # nothing of the current step shown yet

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepStarted):
            self._role, self._scored, self._fresh = event.author, False, True
            self.console.print(Text(LABEL[event.author] + " │ ", style=f"bold {STYLE[event.author]}"), end="")
        elif isinstance(event, TokenText):
            self._token(event.text)
        elif isinstance(event, StepScored):
            decision, self._scored = event.decision, True
            self._end_step()
            if decision.invalid:
                verdict = Text(f"       ✗ reward {decision.reward} is not a number: rejected", style="red")
            elif decision.accepted:
                verdict = Text(
                    f"       ✓ accepted · reward {format_reward(decision.reward)} · ω {decision.omega:.2f}",
                    style="green",
                )
            else:
                verdict = Text(
                    f"       ✗ rejected · reward {format_reward(decision.reward)} · ω {decision.omega:.2f}"
                    " → the target rewrites this step",
                    style="red",
                )
            self.console.print(verdict)
        elif isinstance(event, StepDone) and not self._scored:
            self._end_step()

    def _token(self, text: str) -> None:
        if self._fresh:  # a step that opens with newlines starts on the label's line
            text = text.lstrip("\n")
            self._fresh = not text
        body = text.rstrip("\n")
        if body:
            shown, self._newlines = self._newlines + body, ""
            indent = "\n" + " " * 7 + "│ "
            self.console.print(Text(shown.replace("\n", indent), style=STYLE[self._role]), end="")
        self._newlines += text[len(body) :]  # trailing newlines wait: the step may end here

    def _end_step(self) -> None:
        self._newlines = ""
        self.console.print()


def print_summary(console: Console, trace: Trace, described: dict[str, str]) -> None:
    """The answer, why it ended, and the measured cost per role."""
    answer = trace.final_answer
    console.print()
    if trace.error:
        console.print(Text(f"error: {trace.error}", style="bold red"))
    console.print(
        Text.assemble(
            ("answer: ", "bold"),
            (answer or "(no final answer)", "bold green" if answer else "yellow"),
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
