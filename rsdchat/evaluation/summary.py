"""What an eval run found, per method: accuracy with its interval, cost per role, and the paired
comparison against target-only on the same questions."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from rsdchat.core.types import Role
from rsdchat.units import si

BASELINE = "target-only"
Z95 = 1.959963984540054


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion (well behaved at 0 and n)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar(wins: int, losses: int) -> float:
    """Exact two-sided McNemar p-value: the discordant pairs as fair coin flips."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = math.ldexp(sum(math.comb(n, k) for k in range(min(wins, losses) + 1)), -n)
    return min(1.0, 2 * tail)


@dataclass
class Paired:
    """Against the baseline on the questions both answered: who was right where the other was not."""

    questions: int
    wins: int  # this method right, the baseline wrong
    losses: int
    p_value: float


@dataclass
class MethodSummary:
    method: str
    n: int = 0
    correct: int = 0
    errors: int = 0
    seconds: float = 0.0  # what the runs would take alone (a step from the sweep's cache: its cost)
    measured: float = 0.0  # the wall time they took in this file's runs (less when steps were shared)
    flops: float = 0.0
    tokens: dict[str, dict[str, int]] = field(default_factory=dict)  # role -> prefill/generated
    flops_by_role: dict[str, float] = field(default_factory=dict)
    seconds_by_role: dict[str, float] = field(default_factory=dict)  # each model's own time
    judged: int = 0
    accepted: int = 0
    decided_by: dict[str, int] = field(default_factory=dict)  # judged steps per deciding reward
    target_tokens: int = 0
    answer_tokens: int = 0
    draft_alone: int = 0  # questions answered with no step by the target
    solved_alone: int = 0  # ... and answered right
    levels: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    paired: Paired | None = None
    wall_x: float | None = None  # against the baseline, on the questions both answered
    flops_x: float | None = None

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.correct, self.n)

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.judged if self.judged else None

    @property
    def target_share(self) -> float | None:
        return self.target_tokens / self.answer_tokens if self.answer_tokens else None

    def to_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {
            "method": self.method,
            "questions": self.n,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "ci95": [low, high],
            "errors": self.errors,
            "seconds": self.seconds,
            "seconds_measured": self.measured,
            "flops": self.flops,
            "wall_x": self.wall_x,
            "flops_x": self.flops_x,
            "tokens": self.tokens,
            "flops_by_role": self.flops_by_role,
            "seconds_by_role": self.seconds_by_role,
            "acceptance_rate": self.acceptance,
            "decided_by": self.decided_by,
            "target_share": self.target_share,
            "draft_alone_share": self.draft_alone / self.n if self.n else None,
            "solved_by_draft_alone_share": self.solved_alone / self.n if self.n else None,
            "levels": {
                level: {"correct": c, "questions": n} for level, (c, n) in sorted(self.levels.items())
            },
            "vs_target_only": None if self.paired is None else vars(self.paired),
        }


def summarise(records: Iterable[dict[str, Any]], order: Sequence[str] = ()) -> list[MethodSummary]:
    """One summary per method, in `order` (then any other method in the order first seen)."""
    by_method: dict[str, dict[str, dict[str, Any]]] = {}
    for record in records:
        by_method.setdefault(str(record["method"]), {})[str(record["id"])] = record
    names = [m for m in order if m in by_method] + [m for m in by_method if m not in order]
    summaries = [_summary(name, list(by_method[name].values())) for name in names]
    baseline = by_method.get(BASELINE)
    if baseline is not None:
        for summary in summaries:
            _compare(summary, by_method[summary.method], baseline)
    return summaries


def _summary(name: str, records: list[dict[str, Any]]) -> MethodSummary:
    summary = MethodSummary(name)
    for record in records:
        summary.n += 1
        summary.correct += bool(record.get("correct"))
        summary.errors += record.get("error") is not None
        summary.seconds += float(record.get("seconds") or 0.0)
        summary.measured += float(record.get("seconds_measured", record.get("seconds")) or 0.0)
        cost = record.get("cost") or {}
        summary.flops += float(cost.get("total_flops") or 0.0)
        for role in Role:
            spent = cost.get(role.value) or {}
            tokens = summary.tokens.setdefault(role.value, {"prefill": 0, "generated": 0})
            tokens["prefill"] += int(spent.get("prefill_tokens") or 0)
            tokens["generated"] += int(spent.get("generated_tokens") or 0)
            summary.flops_by_role[role.value] = summary.flops_by_role.get(role.value, 0.0) + float(
                spent.get("flops") or 0.0
            )
            summary.seconds_by_role[role.value] = summary.seconds_by_role.get(role.value, 0.0) + float(
                spent.get("seconds") or 0.0
            )
        acceptance = record.get("acceptance") or {}
        summary.judged += int(acceptance.get("judged") or 0)
        summary.accepted += int(acceptance.get("accepted") or 0)
        for name, count in (acceptance.get("decided_by") or {}).items():
            summary.decided_by[name] = summary.decided_by.get(name, 0) + int(count)
        summary.target_tokens += int(record.get("target_tokens") or 0)
        summary.answer_tokens += int(record.get("answer_tokens") or 0)
        alone = not record.get("target_steps")
        summary.draft_alone += alone
        summary.solved_alone += alone and bool(record.get("correct"))
        if record.get("level") is not None:
            cell = summary.levels[str(record["level"])]
            cell[0] += bool(record.get("correct"))
            cell[1] += 1
    return summary


def _compare(
    summary: MethodSummary, mine: dict[str, dict[str, Any]], base: dict[str, dict[str, Any]]
) -> None:
    common = [q for q in mine if q in base]
    if not common:
        return
    wins = sum(bool(mine[q].get("correct")) and not base[q].get("correct") for q in common)
    losses = sum(not mine[q].get("correct") and bool(base[q].get("correct")) for q in common)
    summary.paired = Paired(len(common), wins, losses, mcnemar(wins, losses))
    wall = sum(float(base[q].get("seconds") or 0.0) for q in common)
    if wall:
        summary.wall_x = sum(float(mine[q].get("seconds") or 0.0) for q in common) / wall
    flops, their_flops = _total_flops(mine, common), _total_flops(base, common)
    if flops is not None and their_flops:
        summary.flops_x = flops / their_flops


def _total_flops(records: dict[str, dict[str, Any]], ids: list[str]) -> float | None:
    """The FLOPs of these answers; None when any answer's are unknown (a model of unknown size)."""
    total = 0.0
    for q in ids:
        value = (records[q].get("cost") or {}).get("total_flops")
        if value is None:
            return None
        total += float(value)
    return total


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


COLUMNS = ("method", "right", "accuracy (95% CI)", "wall ×", "FLOPs ×", "drafts kept", "target tokens",
           "solved by draft", "vs target-only")  # fmt: skip


def rows(summaries: Sequence[MethodSummary]) -> list[list[str]]:
    """The table's cells; ratios are against target-only on the questions both answered."""
    table = []
    for s in summaries:
        low, high = s.interval
        paired = "–"
        if s.paired is not None and s.method != BASELINE:
            paired = f"+{s.paired.wins} −{s.paired.losses} p={s.paired.p_value:.2g}"
        table.append(
            [
                s.method,
                f"{s.correct}/{s.n}",
                f"{s.accuracy:.0%} ({100 * low:.0f}–{100 * high:.0f})",
                _ratio(s.wall_x),
                _ratio(s.flops_x),
                _pct(s.acceptance),
                _pct(s.target_share),
                _pct(s.solved_alone / s.n if s.n else None),
                paired,
            ]
        )
    return table


def rich_table(summaries: Sequence[MethodSummary], title: str = "") -> Table:
    table = Table(title=title or None, header_style="bold", show_edge=False)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows(summaries):
        table.add_row(*row)
    return table


def markdown_table(summaries: Sequence[MethodSummary]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(summaries)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SweepTime:
    """What a sweep of several rsd runs cost against one of them alone."""

    runs: int
    measured: float  # wall seconds the sweep took, shared steps counted once
    one_run: float  # wall seconds one run takes alone (mean of the runs' own ledgers)

    @property
    def ratio(self) -> float:
        return self.measured / self.one_run if self.one_run else float("nan")

    def describe(self) -> str:
        return (
            f"sweep: {self.runs} rsd runs took {self.measured:.0f} s together; one run alone takes "
            f"{self.one_run:.0f} s → the sweep cost {self.ratio:.2f}× a single run"
        )


def sweep_time(summaries: Sequence[MethodSummary]) -> SweepTime | None:
    """For two or more rsd runs that shared steps; None otherwise."""
    runs = [s for s in summaries if s.method.split(":")[0] == "rsd"]
    measured, alone = sum(s.measured for s in runs), sum(s.seconds for s in runs)
    if len(runs) < 2 or not measured < alone:
        return None
    return SweepTime(len(runs), measured, alone / len(runs))


def speed_line(summaries: Sequence[MethodSummary]) -> str:
    """Each model's raw speed in this run, from the methods where it worked alone."""
    alone = {"draft-only": Role.DRAFT, BASELINE: Role.TARGET}
    parts = []
    for summary in summaries:
        role = alone.get(summary.method)
        seconds = summary.seconds_by_role.get(role.value, 0.0) if role is not None else 0.0
        if role is None or not seconds:
            continue
        tokens = summary.tokens.get(role.value, {})
        read, written = tokens.get("prefill", 0), tokens.get("generated", 0)
        parts.append(
            f"{role.value} {written / seconds:.1f} tok/s ({read} tokens read and {written} written "
            f"in {seconds:.0f} s of its own time)"
        )
    return "each model alone in this run: " + "; ".join(parts) if parts else ""


def cost_line(summary: MethodSummary) -> str:
    """'draft 12.3k tok 14.1 TFLOP · target …' for one method."""
    parts = []
    for role in Role:
        tokens = summary.tokens.get(role.value, {})
        total = tokens.get("prefill", 0) + tokens.get("generated", 0)
        if total:
            parts.append(
                f"{role.value} {si(total)} tok {si(summary.flops_by_role.get(role.value, 0.0), 'FLOP')}"
            )
    judged = sum(summary.decided_by.values())
    if len(summary.decided_by) > 1 and judged:  # a cascade: how often each stage decided
        counts = sorted(summary.decided_by.items())
        shares = ", ".join(f"{name} {count / judged:.0%}" for name, count in counts)
        parts.append(f"decided by {shares}")
    return " · ".join(parts)
