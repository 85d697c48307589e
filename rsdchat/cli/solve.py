"""`rsdchat solve`: answer questions one-shot, many in flight, every finished answer kept.

Where answers go:
- `--json`: one JSON object per question on stdout, in input order;
- `--output FILE`: the same objects appended to FILE as they finish (flushed, fsynced);
  rerunning the same command skips the questions FILE already answers;
- otherwise the reply's text on stdout; the live view (steps, rewards, decisions) and the
  cost table go to the terminal, or to stderr when stdout is a file or a pipe (`-q` drops
  them).
Ctrl-C or SIGTERM stop every question; what finished is written before the program ends.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rsdchat.cli.render import LivePrinter, print_summary, record
from rsdchat.core.errors import RsdchatError
from rsdchat.core.events import Event, ignore
from rsdchat.core.policy import Policy
from rsdchat.core.trace import Trace
from rsdchat.evaluation.data import Problem
from rsdchat.files import JsonLines, Record
from rsdchat.prompts import build_messages
from rsdchat.runtime import Runtime, open_runtime
from rsdchat.strict_json import dumps

if TYPE_CHECKING:
    from rsdchat.settings import Settings


@dataclass
class Solved:
    """What a solve run produced: finished traces by question index."""

    traces: dict[int, Trace] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(1 for trace in self.traces.values() if trace.finish_reason == "error")


class OrderedWriter:
    """Writes one JSON line per question in input order, each line whole and strict JSON.

    `flush` writes what is held back behind an unfinished question (when the run stops).
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._ready: dict[int, Record] = {}
        self._next = 0

    def add(self, index: int, line: Record) -> None:
        self._ready[index] = line
        while self._next in self._ready:
            self._write(self._ready.pop(self._next))
            self._next += 1

    def flush(self) -> None:
        for index in sorted(self._ready):
            self._write(self._ready.pop(index))

    def _write(self, line: Record) -> None:
        self._out.write(dumps(line) + "\n")  # never half a line
        self._out.flush()


def _not_answers(records: list[Record]) -> str | None:
    """Why `records` are not what `solve --output` writes (None: they are, or there are none)."""
    for number, line in enumerate(records, 1):
        if not {"id", "status", "settings"} <= line.keys():
            return f"is not an rsdchat solve output (record {number} is not an answer)"
    return None


class AppendedFile:
    """`--output FILE`: the --json lines appended as they finish; ids already there are not asked again.

    A file that is not a solve output is refused before anything is written to it.
    """

    def __init__(self, path: Path) -> None:
        self.lines = JsonLines(path, ours=_not_answers)
        self.lines.keep_only(lambda line: line.get("status") == "ok")  # failed ones are asked again
        self.done = {str(line.get("id")) for line in self.lines.lines}

    def add(self, index: int, line: Record) -> None:
        self.lines.add(line)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.lines.close()


async def run_solve(
    settings: Settings,
    problems: Sequence[Problem],
    *,
    as_json: bool,
    out: TextIO,
    err: Console,
    output: Path | None = None,
    quiet: bool = False,
) -> Solved:
    """Open the models, answer every problem, keep each answer as it finishes. Cancellable."""
    sink = AppendedFile(output) if output is not None else None
    try:
        todo = [(i, p) for i, p in enumerate(problems) if sink is None or p.id not in sink.done]
        if sink is not None and len(todo) < len(problems):
            err.print(f"{len(problems) - len(todo)} questions are answered in {output} already", style="dim")
        if not todo:
            return Solved()
        with err.status("loading models…", spinner="dots"):
            runtime = await open_runtime(settings)
        try:
            runtime.engine.check(runtime.policy())  # a δ outside the reward's range, …: before any work
            view = View(runtime, out, err, as_json=as_json or sink is not None, quiet=quiet)
            return await _solve_all(runtime, problems, todo, view, sink or OrderedWriter(out))
        finally:
            await runtime.aclose()
    finally:
        if sink is not None:
            sink.close()


class View:
    """What people see: the live steps and the cost table, on the terminal or on stderr."""

    def __init__(self, runtime: Runtime, out: TextIO, err: Console, *, as_json: bool, quiet: bool) -> None:
        settings = runtime.settings
        self.as_json, self.err = as_json, err
        self.answers = None if as_json or out.isatty() else out  # the replies alone, for a file or pipe
        screen = Console(file=out, highlight=False) if out.isatty() else Console(stderr=True, highlight=False)
        self.console = None if quiet or as_json else screen
        self.live = self.console is not None and settings.concurrency == 1
        self.described = runtime.describe()
        self.shown_settings = {**self.described, **_policy_settings(settings, runtime.policy())}
        if self.console is not None:
            _print_header(self.console, self.described, runtime)

    def events(self, problem: Problem, many: bool) -> Callable[[Event], None]:
        if not self.live or self.console is None:
            return ignore
        if many:
            self.console.rule(f"[bold]{problem.id}[/bold]")
            self.console.print(problem.question)
        return LivePrinter(self.console)

    def finished(self, problem: Problem, trace: Trace, many: bool) -> None:
        if trace.error:
            self.err.print(
                f"[bold red]{problem.id}: {trace.error}[/bold red]", highlight=False, soft_wrap=True
            )
        if self.console is not None:
            if not self.live:
                self.console.rule(f"[bold]{problem.id}[/bold]")
                self.console.print(problem.question)
                self.console.print(trace.text)
            print_summary(self.console, trace, self.described)
        if self.answers is not None:
            self.answers.write(trace.text.strip() + ("\n\n" if many else "\n"))
            self.answers.flush()


async def _solve_all(
    runtime: Runtime,
    problems: Sequence[Problem],
    todo: list[tuple[int, Problem]],
    view: View,
    writer: OrderedWriter | AppendedFile,
) -> Solved:
    settings, outcome, policy = runtime.settings, Solved(), runtime.policy()
    many = len(problems) > 1
    slots = asyncio.Semaphore(settings.concurrency)
    progress = _progress(view.err) if many and not view.live else None
    task_id = progress.add_task("solving", total=len(todo)) if progress else None

    async def one(index: int, problem: Problem) -> None:
        async with slots:
            emit = view.events(problem, many)
            messages = build_messages(settings.system_prompt, problem.question)
            trace = await runtime.engine.solve(
                messages, policy, request_id=problem.id, seed=settings.seed, emit=emit
            )
        outcome.traces[index] = trace
        if view.as_json:
            line = record(
                trace, question_id=problem.id, reference=problem.reference, settings=view.shown_settings
            )
            writer.add(index, line)
        else:
            view.finished(problem, trace, many)
        if progress is not None and task_id is not None:
            progress.advance(task_id)

    tasks = [asyncio.create_task(one(i, p)) for i, p in todo]
    try:
        if progress is not None:
            progress.start()
        await asyncio.gather(*tasks)
    except BaseException:  # Ctrl-C, SIGTERM, a closed stdout: stop every question, keep what finished
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.flush()
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


def stdin_is_terminal() -> bool:
    """Whether stdin is a terminal (False when it is a pipe, a file, or closed)."""
    return sys.stdin is not None and sys.stdin.isatty()


def stdin_text() -> str | None:
    """What is piped on stdin, if anything (bytes that are not UTF-8 are kept as surrogates)."""
    if sys.stdin is None or sys.stdin.isatty():
        return None
    data = sys.stdin.buffer.read()
    return data.decode("utf-8", errors="surrogateescape")


def quiet_stdout() -> None:
    """After a closed pipe: send what Python still flushes at exit to /dev/null, not to an error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def write_failure(exc: OSError) -> RsdchatError | None:
    """None for a closed pipe (the reader went away: stop quietly), else one line to show (exit 1)."""
    if isinstance(exc, BrokenPipeError):
        return None
    return RsdchatError(f"cannot write the output: {exc.strerror or exc}")
