"""The side panel: who does what, the policy in force, acceptance and the running cost."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from rsdchat.chat.status import Status
from rsdchat.core.trace import Ledger
from rsdchat.core.types import Role
from rsdchat.units import si


def cost_table(ledger: Ledger) -> Table:
    table = Table(box=None, padding=(0, 1), show_edge=False, expand=False)
    for column in ("cost", "tokens", "FLOPs", "s"):
        table.add_column(column, justify="left" if column == "cost" else "right")
    for role in Role:
        cost = ledger.cost(role)
        table.add_row(role.value, si(cost.tokens), si(cost.flops), f"{cost.seconds:.1f}")
    table.add_row(Text("total", "bold"), "", si(ledger.flops), f"{ledger.backend_seconds:.1f}")
    return table


class StatusPanel(Static):
    """Who does what, the policy in force, the acceptance rate and the running cost."""

    def show(self, status: Status) -> None:
        table = Table(box=None, padding=(0, 1), show_header=False, show_edge=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for key, value in status.rows:
            table.add_row(key, Text(value))  # Text: a model named "x[q4]" is not markup
        parts: list[RenderableType] = [
            table,
            Text(""),
            cost_table(status.cost),
            Text(""),
            Text(status.state, "italic"),
        ]
        self.update(Group(*parts))
