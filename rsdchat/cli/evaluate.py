"""`rsdchat eval`: methods side by side on the same questions, resumable, with a summary."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from rsdchat.cli import running
from rsdchat.cli.options import Given, with_settings
from rsdchat.core.errors import ConfigError, RsdchatError
from rsdchat.evaluation.data import DATASETS, Problem, load_problems, load_questions
from rsdchat.evaluation.methods import MethodSpec, parse_method, parse_methods
from rsdchat.evaluation.results import ResultsFile, read_results
from rsdchat.evaluation.runner import RunTools, fingerprint, needed_mode, run_methods
from rsdchat.evaluation.summary import (
    cost_line,
    markdown_table,
    rich_table,
    speed_line,
    summarise,
    sweep_time,
)
from rsdchat.files import Record, same_file, write_atomic
from rsdchat.runtime import Runtime, open_runtime
from rsdchat.settings import RSD, Settings, setting_fields
from rsdchat.strict_json import dumps

DEFAULT_METHODS = "target-only,draft-only,rsd"
DEFAULT_DATASET = "gsm8k"


def resume_hint(path: Path) -> str:
    return f"interrupted: the results so far are in {path}; the same command resumes"


def expand_sweeps(specs: Sequence[MethodSpec], sweeps: dict[str, list[float]]) -> list[MethodSpec]:
    """Each method once per combination of the swept settings that matter to it.

    The RSD settings (reward, ω, δ, …) are swept in the rsd methods only; the others in
    every method. A method that sets a swept setting itself keeps its own value.
    """
    rsd_only = {f.name for f in setting_fields() if (f.info.json_schema_extra or {}).get("panel") == RSD}  # type: ignore[union-attr]
    expanded: list[MethodSpec] = []
    for spec in specs:
        keys = [k for k in sweeps if k not in spec.settings and (spec.name == "rsd" or k not in rsd_only)]
        for values in itertools.product(*(sweeps[k] for k in keys)):
            extra = ":".join(f"{k}={v:g}" for k, v in zip(keys, values, strict=True))
            expanded.append(parse_method(f"{spec.text}:{extra}") if extra else spec)
    return expanded


def _problems(
    dataset: str,
    file: Path | None,
    offset: int,
    limit: int,
    ids: str | None,
    skip_bad: bool,
    fields: tuple[str | None, str | None],
    err: Console,
) -> tuple[str, list[Problem]]:
    if file is not None:
        problems, skipped = load_questions(
            file, question_field=fields[0], answer_field=fields[1], skip_bad=skip_bad
        )
        for line in skipped:
            err.print(f"[yellow]skipped[/yellow] {line}", highlight=False)
        name = str(file)
    else:
        problems, name = load_problems(dataset), dataset
    if ids:
        wanted = [part.strip() for part in ids.split(",") if part.strip()]
        known = {p.id: p for p in problems}
        missing = [i for i in wanted if i not in known]
        if missing:
            raise ConfigError(f"--ids: {name} has no question {missing[0]!r}")
        return name, [known[i] for i in wanted]
    if offset < 0 or offset >= len(problems):
        raise ConfigError(f"--offset {offset} is out of range: {name} has {len(problems)} questions")
    chosen = problems[offset : offset + limit] if limit else problems[offset:]
    unanswerable = [p.id for p in chosen if not p.reference]
    if unanswerable:
        raise ConfigError(f'question {unanswerable[0]} has no answer to grade against (an "answer" field)')
    return name, chosen


class Shown:
    """A progress bar per method, with ETA and running accuracy."""

    def __init__(self, console: Console) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[accuracy]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.right: dict[str, list[int]] = {}

    def __call__(self, method: str, record: Record | None, done: int, total: int) -> None:
        if method not in self.tasks:
            self.right[method] = [0, 0]
            self.tasks[method] = self.bar.add_task(method, total=total, completed=done, accuracy="")
        if record is not None:
            tally = self.right[method]
            tally[0] += bool(record.get("correct"))
            tally[1] += 1
            self.bar.update(self.tasks[method], completed=done, accuracy=f"{tally[0]}/{tally[1]} right")


async def evaluate(
    settings: Settings,
    name: str,
    problems: list[Problem],
    specs: list[MethodSpec],
    output: Path,
    cache: bool,
    err: Console,
) -> list[Record]:
    """Run what `output` does not hold yet (loading the models only then); every record in it."""
    results = ResultsFile(output, fingerprint(settings, name), fingerprint(settings, name, defaults=True))
    changed = results.drop_changed(problems)
    if changed:
        err.print(f"the results of {changed} changed question(s) are dropped: they run again", style="dim")
    done = results.done()
    if all((p.id, s.text) in done for p in problems for s in specs):
        results.close()
        return results.records
    runtime: Runtime | None = None
    shown = Shown(err)
    try:
        with err.status("loading models…", spinner="dots"):
            runtime = await open_runtime(settings, needed_mode(specs), with_reward=False)
        tools = RunTools(runtime, cache=cache)
        try:
            with shown.bar:
                await run_methods(tools, settings, problems, specs, results, shown)
        finally:
            hits, lookups = tools.cache_hits()
            if cache and lookups:
                err.print(f"step cache: {hits} of {lookups} steps and rewards came from memory", style="dim")
            await tools.aclose()
    finally:
        if runtime is not None:
            await runtime.aclose()
        results.close()
    return results.records


def report(
    records: list[Record],
    order: list[str],
    *,
    as_json: bool,
    markdown: Path | None,
    out: Console,
    sweep: bool = False,
) -> None:
    """The summary table (or JSON); `sweep`: the rsd runs are one sweep, so say what it cost."""
    summaries = summarise(records, order)
    swept = sweep_time(summaries) if sweep else None
    if markdown is not None:  # a file the user named: replaced whole, never through a link or a device
        write_atomic(markdown, markdown_table(summaries), replace=True)
    if as_json:
        timing = None if swept is None else {**vars(swept), "ratio": swept.ratio}
        print(dumps({"methods": [s.to_dict() for s in summaries], "sweep": timing}))
        return
    out.print(rich_table(summaries, "ratios against target-only on the same questions"))
    for summary in summaries:
        out.print(f"[bold]{summary.method}[/bold]: {cost_line(summary)}", highlight=False)
        if summary.levels:
            levels = ", ".join(f"{lv} {c}/{n}" for lv, (c, n) in sorted(summary.levels.items()))
            out.print(f"  by level: {levels}", highlight=False)
    if swept is not None:
        out.print(swept.describe(), highlight=False)
    speeds = speed_line(summaries)
    if speeds:
        out.print(speeds, highlight=False)


def _save_plots(records: list[Record], order: list[str], folder: Path, err: Console) -> None:
    from rsdchat.evaluation.plots import save_plots

    for saved in save_plots(records, order, folder):
        err.print(f"saved {saved}", highlight=False)


def _report_source(
    path: Path, recorded: object, dataset: str | None, file: Path | None
) -> tuple[str, Path | None]:
    """The questions a results file was written for, as (dataset, file); -d or -f must name them.

    `recorded` is the dataset its header names (a packaged benchmark, or the question file).
    Without -d and -f, the file's own are used (to take a slice of them).
    """
    if not isinstance(recorded, str) or not recorded:
        return dataset or DEFAULT_DATASET, file  # a header without it: as the flags say
    if file is not None:
        if recorded != str(file) and not same_file(Path(recorded), file):
            raise ConfigError(
                f"{path} holds the results of {recorded}, not of --file {file}: "
                "give that file's results with -o, or leave out --file"
            )
        return dataset or DEFAULT_DATASET, file
    if dataset is not None:
        if recorded != dataset:
            raise ConfigError(
                f"{path} holds the results of {recorded}, not of --dataset {dataset}: "
                f"give the results of {dataset} with -o, or leave out --dataset"
            )
        return dataset, None
    if recorded in DATASETS:
        return recorded, None
    return DEFAULT_DATASET, Path(recorded)


def eval_command(
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            "-d",
            help=f"A packaged benchmark: {', '.join(DATASETS)}.",
            show_default=DEFAULT_DATASET,
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", help="Your own questions: JSONL or CSV with question and answer columns."
        ),
    ] = None,
    offset: Annotated[int, typer.Option(help="First question (0-based).")] = 0,
    limit: Annotated[
        int | None,
        typer.Option(help="How many questions (0: all to the end).", show_default="20; with --report, all"),
    ] = None,
    ids: Annotated[str | None, typer.Option(help="Only these question ids, comma-separated.")] = None,
    methods: Annotated[
        str | None,
        typer.Option(
            "--methods",
            "-m",
            help=(
                "Comma-separated: target-only, draft-only, rsd, random, sd, maj, bon, pbon, beam; "
                "options after ':' (bon:n=4, rsd:delta=0.8)."
            ),
            show_default=f"{DEFAULT_METHODS}; with --report, every method in the file",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="The results file (JSONL; rerun to resume).",
            show_default="rsdchat-eval-<dataset>.jsonl",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="The summary as one JSON object on stdout.")
    ] = False,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help="Also write the summary table as Markdown.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Save PNG plots in this folder (needs matplotlib).")
    ] = None,
    report_only: Annotated[
        bool, typer.Option("--report", help="Only summarise the results file; run nothing.")
    ] = False,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Skip malformed lines of --file instead of stopping.")
    ] = False,
    question_field: Annotated[
        str | None,
        typer.Option(help="The question's field in --file.", show_default="question or problem"),
    ] = None,
    answer_field: Annotated[
        str | None, typer.Option(help="The answer's field in --file.", show_default="answer")
    ] = None,
    *,
    _settings_given: Given,
) -> None:
    """Compare methods on the same questions: accuracy, cost, and RSD against target-only.

    Results are written as they finish; rerunning the same command resumes.

    A numeric setting takes several values (<float,…>: a list A,B,C or a range LOW:HIGH:STEP, as in
    --delta 0.5:0.95:0.05): it runs once per value, sharing their steps.

    [dim]Examples:[/dim]

      rsdchat eval -d gsm8k --limit 50 -m target-only,rsd,bon:n=4 -o gsm8k.jsonl

      rsdchat eval -m target-only,rsd --delta 0.7:0.95:0.05 --plot plots/
    """
    err = Console(stderr=True)
    given = _settings_given
    specs = expand_sweeps(parse_methods(methods or DEFAULT_METHODS), given.sweeps)
    path = output or Path(f"rsdchat-eval-{(file.stem if file else dataset or DEFAULT_DATASET)}.jsonl")
    if file is not None and same_file(file, path):
        raise ConfigError(
            f"--file {file} and --output {path} are the same file: the results go to a file of their own"
        )
    questions = Questions(dataset, file, offset, limit, ids, skip_bad, (question_field, answer_field))
    if report_only:
        every_method = methods is None and not given.sweeps
        picked = recorded_results(path, questions, None if every_method else specs, err)
    else:
        picked = run_results(given.settings(), path, questions, specs, bool(given.sweeps), err)
    out = Console(width=None if sys.stdout.isatty() else 160)
    report(
        picked.records, picked.order, as_json=as_json, markdown=markdown, out=out, sweep=bool(given.sweeps)
    )
    if plot is not None:
        _save_plots(picked.records, picked.order, plot, err)


@dataclass(frozen=True)
class Questions:
    """Which questions `eval` was asked about (-d/-f, --offset, --limit, --ids, …)."""

    dataset: str | None
    file: Path | None
    offset: int
    limit: int | None  # None: the default (20 to run; all to report)
    ids: str | None
    skip_bad: bool
    fields: tuple[str | None, str | None]  # the question's and the answer's field in --file

    @property
    def sliced(self) -> bool:
        return bool(self.offset or self.limit is not None or self.ids)


@dataclass(frozen=True)
class Picked:
    """The records picked for the summary, and the methods in the order its table shows them."""

    records: list[Record]
    order: list[str]


def run_results(
    settings: Settings, path: Path, questions: Questions, specs: list[MethodSpec], sweep: bool, err: Console
) -> Picked:
    """`rsdchat eval`: run (or resume) every method on the questions; their results."""
    count = 20 if questions.limit is None else questions.limit
    dataset = questions.dataset or DEFAULT_DATASET
    q = questions
    name, problems = _problems(dataset, q.file, q.offset, count, q.ids, q.skip_bad, q.fields, err)
    err.print(f"{len(problems)} questions from {name} × {len(specs)} methods → {path}", highlight=False)
    try:
        records = running.run(
            evaluate(settings, name, problems, specs, path, sweep, err), interrupted=resume_hint(path)
        )
    except RsdchatError as exc:
        err.print(f"[bold red]rsdchat:[/bold red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    wanted = {p.id for p in problems}
    order = [s.text for s in specs]
    return Picked([r for r in records if r.get("id") in wanted and r.get("method") in order], order)


def recorded_results(
    path: Path, questions: Questions, specs: list[MethodSpec] | None, err: Console
) -> Picked:
    """`rsdchat eval --report`: the results file's records (of a slice, of `specs`); nothing runs."""
    config, records = read_results(path)
    q = questions
    source, source_file = _report_source(path, config.get("dataset"), q.dataset, q.file)
    if q.sliced:  # a slice: only its questions
        _, chosen = _problems(source, source_file, q.offset, q.limit or 0, q.ids, q.skip_bad, q.fields, err)
        wanted = {p.id for p in chosen}
        records = [r for r in records if r.get("id") in wanted]
    if specs is None:  # every method in the file
        return Picked(records, list(dict.fromkeys(str(r.get("method")) for r in records)))
    order = [s.text for s in specs]
    return Picked([r for r in records if r.get("method") in order], order)


def register(app: typer.Typer) -> None:
    app.command("eval")(with_settings(sweeps=True)(eval_command))
