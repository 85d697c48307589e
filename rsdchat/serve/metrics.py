"""`GET /metrics`: what the server has done, in Prometheus' text format (version 0.0.4).

Counters: requests by model and status; steps drafted, accepted and rewritten; tokens read
and written and FLOPs per role. Gauges: requests running and waiting. Histograms: the
request's latency and its time to the first step.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

from rsdchat.core.trace import Trace
from rsdchat.core.types import Role

BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)  # seconds


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value

    def lines(self, name: str) -> list[str]:
        lines, running = [], 0
        for bound, count in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            lines.append(f'{name}_bucket{{le="{le}"}} {running}')
        return [*lines, f"{name}_sum {self.total:.6f}", f"{name}_count {running}"]


@dataclass
class Metrics:
    """Everything /metrics reports, updated by the server as requests come and go."""

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)  # (model, status)
    steps: Counter[str] = field(default_factory=Counter)  # drafted, accepted, rewritten, written
    tokens: Counter[tuple[str, str]] = field(default_factory=Counter)  # (role, prefill|generated)
    flops: dict[str, float] = field(default_factory=dict)  # by role
    running: int = 0
    waiting: int = 0
    latency: Histogram = field(default_factory=Histogram)
    first_step: Histogram = field(default_factory=Histogram)

    def finished(self, trace: Trace) -> None:
        """Count what one answer did (its steps and its measured cost)."""
        for step in trace.steps:
            if step.author is Role.DRAFT and step.decision is not None:
                self.steps["drafted"] += 1
                self.steps["accepted" if step.accepted else "rejected"] += 1
            elif step.author is Role.TARGET and any(
                s.index == step.index and s is not step and not s.accepted for s in trace.steps
            ):
                self.steps["rewritten"] += 1
            else:
                self.steps["written"] += 1  # by one model alone (single-model modes, keep-pen steps)
        for role, usage in trace.ledger.usage.items():
            self.tokens[(role.value, "prefill")] += usage.prefill_tokens
            self.tokens[(role.value, "generated")] += usage.generated_tokens
        for role, flops in trace.ledger.flops_by_role.items():
            self.flops[role.value] = self.flops.get(role.value, 0.0) + flops

    def render(self) -> str:
        out: list[str] = []

        def family(name: str, kind: str, what: str) -> None:
            out.extend((f"# HELP {name} {what}", f"# TYPE {name} {kind}"))

        family("rsdchat_requests_total", "counter", "Requests answered, by served model and HTTP status.")
        out += [
            f'rsdchat_requests_total{{model="{model}",status="{status}"}} {count}'
            for (model, status), count in sorted(self.requests.items())
        ]
        family(
            "rsdchat_steps_total",
            "counter",
            "Steps: drafted (judged), accepted, rejected, rewritten, written.",
        )
        out += [f'rsdchat_steps_total{{kind="{kind}"}} {count}' for kind, count in sorted(self.steps.items())]
        family("rsdchat_tokens_total", "counter", "Tokens each role read (prefill) and wrote (generated).")
        out += [
            f'rsdchat_tokens_total{{role="{role}",kind="{kind}"}} {count}'
            for (role, kind), count in sorted(self.tokens.items())
        ]
        family("rsdchat_flops_total", "counter", "FLOPs each role spent (2 x parameters x tokens).")
        out += [
            f'rsdchat_flops_total{{role="{role}"}} {flops:.6g}' for role, flops in sorted(self.flops.items())
        ]
        family("rsdchat_requests_running", "gauge", "Requests being answered now.")
        out.append(f"rsdchat_requests_running {self.running}")
        family("rsdchat_requests_waiting", "gauge", "Requests waiting for a free slot.")
        out.append(f"rsdchat_requests_waiting {self.waiting}")
        family("rsdchat_request_seconds", "histogram", "Time from a request's arrival to its last byte.")
        out += self.latency.lines("rsdchat_request_seconds")
        family("rsdchat_first_step_seconds", "histogram", "Time from a request's arrival to its first step.")
        out += self.first_step.lines("rsdchat_first_step_seconds")
        return "\n".join(out) + "\n"
