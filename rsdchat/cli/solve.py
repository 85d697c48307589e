"""`rsdchat solve`: answer questions one-shot, many in flight, output in input order."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rsdchat.cli.render import LivePrinter, print_summary, record
from rsdchat.evaluation.data import Problem
from rsdchat.events import Event, ignore
from rsdchat.policy import Policy
from rsdchat.prompts import build_messages
from rsdchat.runtime import Runtime, open_runtime
from rsdchat.trace import Trace

if TYPE_CHECKING:
    from rsdchat.settings import Settings


@dataclass
class Outcome:
    """What a solve run produced: finished traces by question index."""

    traces: dict[int, Trace] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(1 for trace in self.traces.values() if trace.finish_reason == "error")


class OrderedWriter:
    """Writes one JSON line per question, in input order, each line whole."""

    def __init__(self, out: TextIO, render: Callable[[int, Trace], dict[str, Any]]) -> None:
        self._out, self._render = out, render
        self._ready: dict[int, Trace] = {}
        self._next = 0

    def add(self, index: int, trace: Trace) -> None:
        self._ready[index] = trace
        while self._next in self._ready:
            line = json.dumps(self._render(self._next, self._ready.pop(self._next)), ensure_ascii=False)
            self._out.write(line + "\n")  # one write per line: never half a line
            self._out.flush()
            self._next += 1


async def run_solve(
    settings: Settings,
    problems: Sequence[Problem],
    *,
    as_json: bool,
    out: TextIO,
    err: Console,
) -> Outcome:
    """Open the models, answer every problem, print as they finish. Cancellable."""
    with err.status("loading models…", spinner="dots"):
        runtime = await open_runtime(settings)
    try:
        return await _solve_all(runtime, problems, as_json=as_json, out=out, err=err)
    finally:
        await runtime.aclose()


async def _solve_all(
    runtime: Runtime, problems: Sequence[Problem], *, as_json: bool, out: TextIO, err: Console
) -> Outcome:
    settings, outcome = runtime.settings, Outcome()
    policy = runtime.policy()
    described = runtime.describe()
    shown_settings = {**described, **_policy_settings(settings, policy)}
    live = not as_json and settings.concurrency == 1
    console = Console(file=out, highlight=False)

    def to_json(index: int, trace: Trace) -> dict[str, Any]:
        problem = problems[index]
        return record(trace, question_id=problem.id, reference=problem.reference, settings=shown_settings)

    writer = OrderedWriter(out, to_json)
    if not as_json:
        _print_header(console, described, runtime)
    slots = asyncio.Semaphore(settings.concurrency)
    progress = _progress(err) if len(problems) > 1 and (as_json or not live) else None
    task_id = progress.add_task("solving", total=len(problems)) if progress else None

    async def one(index: int, problem: Problem) -> None:
        async with slots:
            if live and len(problems) > 1:
                console.rule(f"[bold]{problem.id}[/bold]")
                console.print(problem.question)
            emit: Callable[[Event], None] = LivePrinter(console) if live else ignore
            messages = build_messages(settings.system_prompt, problem.question)
            trace = await runtime.engine.solve(
                messages, policy, request_id=problem.id, seed=settings.seed, emit=emit
            )
        outcome.traces[index] = trace
        if as_json:
            writer.add(index, trace)
        else:
            if not live:
                console.rule(f"[bold]{problem.id}[/bold]")
                console.print(problem.question)
                console.print(trace.text)
            print_summary(console, trace, described)
        if progress is not None and task_id is not None:
            progress.advance(task_id)

    tasks = [asyncio.create_task(one(i, p)) for i, p in enumerate(problems)]
    try:
        if progress is not None:
            progress.start()
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:  # Ctrl-C: stop every question, then let it propagate
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        if progress is not None:
            progress.stop()
    return outcome


def _policy_settings(settings: Settings, policy: Policy) -> dict[str, Any]:
    """The settings an answer was written with, δ as in force (the reward's default if unset)."""
    keys = ("max_steps", "max_step_tokens", "max_tokens", "temperature", "top_p", "seed", "step_delimiter")
    shown: dict[str, Any] = {key: getattr(settings, key) for key in (*keys, "concurrency")}
    shown["weighting"] = policy.weighting.to_dict()
    shown["delta"] = policy.weighting.threshold
    return shown


def _print_header(console: Console, described: dict[str, str], runtime: Runtime) -> None:
    reward = runtime.reward
    parts = [f"{role} [bold]{described[role]}[/bold]" for role in ("draft", "target") if role in described]
    line = " → ".join(parts)
    if "reward" in described and reward is not None:
        line += f" · reward [bold]{described['reward']}[/bold] ({reward.kind}) · {described['weighting']}"
    else:
        line += f" · mode {described['mode']}"
    console.print(line, style="dim", highlight=False)


def _progress(err: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


def stdin_question() -> str | None:
    """The question piped on stdin, if any."""
    if sys.stdin is None or sys.stdin.isatty():
        return None
    return sys.stdin.read()
