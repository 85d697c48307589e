"""The `rsdchat` command line: the chat app by default, `solve` for one-shot answers.

Every command that runs models takes every setting as an option (`rsdchat.cli.options`);
options given before the subcommand apply to it too.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from rsdchat.cli import calibrate, evaluate
from rsdchat.cli.info import info_commands
from rsdchat.cli.options import Given, with_settings
from rsdchat.errors import ConfigError, RsdchatError
from rsdchat.evaluation.data import Problem, load_jsonl_questions

app = typer.Typer(
    name="rsdchat",
    help=(
        "Reward-Guided Speculative Decoding in the terminal: a small draft model writes each "
        "reasoning step, a reward scores it, and the large target model rewrites the steps the "
        "reward rejects.\n\nRun with no command to open the chat app. Every option is also "
        "RSDCHAT_<NAME> in the environment and <name> in the config file (see `rsdchat config`)."
    ),
    no_args_is_help=False,
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
info_commands(app)
evaluate.register(app)
calibrate.register(app)


@app.callback()
@with_settings
def chat(
    ctx: typer.Context,
    resume: Annotated[Path | None, typer.Option(help="Reopen a saved transcript (JSONL).")] = None,
    *,
    _settings_given: Given,
) -> None:
    """Open the chat app when no command is given (keys and /commands: docs/tui.md)."""
    if ctx.invoked_subcommand is not None:
        return
    from rsdchat.tui import run

    run(_settings_given.settings(), resume)


@app.command()
@with_settings
def solve(
    question: Annotated[
        str | None, typer.Argument(help="The question. Omit it (or give '-') to read it from stdin.")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", help='JSONL file: one question per line ({"question": …, "id"?, "answer"?}).'
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per question on stdout.")] = False,
    *,
    _settings_given: Given,
) -> None:
    """Answer questions with RSD and show which model wrote each step.

    [dim]Examples:[/dim]

      rsdchat solve "What is 15% of 240?"

      echo "If 3 pens cost $4.50, what do 7 cost?" | rsdchat solve --json

      rsdchat solve --file questions.jsonl --json --delta 0.8 > answers.jsonl
    """
    settings = _settings_given.settings()
    problems = _problems(question, file)
    from rsdchat.cli.solve import run_solve

    err = Console(stderr=True)
    try:
        outcome = asyncio.run(run_solve(settings, problems, as_json=as_json, out=sys.stdout, err=err))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130) from None
    if outcome.errors:
        raise typer.Exit(1)


def _problems(question: str | None, file: Path | None) -> list[Problem]:
    if file is not None and question is not None:
        raise ConfigError("give a question or --file, not both")
    if file is not None:
        return load_jsonl_questions(file)
    if question is None or question == "-":
        from rsdchat.cli.solve import stdin_question

        question = stdin_question()
        if question is None:
            raise ConfigError("no question: pass it as an argument, on stdin, or with --file")
    if not question.strip():
        raise ConfigError("the question is empty")
    return [Problem(id="q1", question=question.strip(), reference="")]


def main() -> None:
    """Console entry point: user mistakes get one line and exit 2, never a traceback."""
    try:
        app()
    except RsdchatError as exc:
        Console(stderr=True).print(f"[bold red]rsdchat:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
