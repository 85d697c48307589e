"""The `rsdchat` command line: the chat app by default, `solve` for one-shot answers.

Every command that runs models takes every setting as an option (`rsdchat.cli.options`);
options given before the subcommand apply to it too. `--help` is `rsdchat.cli.helptext`'s.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from rsdchat.cli import calibrate, evaluate, running, serve, train_prm
from rsdchat.cli.helptext import HelpGroup, use_everywhere
from rsdchat.cli.info import info_commands
from rsdchat.cli.options import Given, with_settings
from rsdchat.core.errors import ConfigError, RsdchatError, redact
from rsdchat.evaluation.data import Problem, load_jsonl_questions
from rsdchat.plugins import backend_plugins
from rsdchat.progress import print_on_stderr

app = typer.Typer(
    name="rsdchat",
    help=(
        "Reward-Guided Speculative Decoding in the terminal: a small draft model writes each "
        "reasoning step, a reward scores it, and the large target model rewrites the steps the "
        "reward rejects.\n\nRun with no command to open the chat app; `rsdchat COMMAND --help` "
        "for a command. Every setting is also RSDCHAT_<NAME> in the environment and <name> in the "
        "config file."
    ),
    cls=HelpGroup,
    no_args_is_help=False,
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
info_commands(app)
evaluate.register(app)
calibrate.register(app)
serve.register(app)
train_prm.register(app)
for _plugin in backend_plugins().values():  # a backend may bring commands (rsdchat-vllm: serve-models)
    if _plugin.commands is not None:
        _plugin.commands(app)


def _version(shown: bool) -> None:
    if shown:
        from importlib.metadata import PackageNotFoundError, version

        parts = []
        for name in ("rsdchat", "rsdchat-llamacpp", "rsdchat-openai", "rsdchat-vllm"):
            try:
                parts.append(f"{name} {version(name)}")
            except PackageNotFoundError:
                continue
        print(" · ".join(parts))
        raise typer.Exit()


@app.callback()
@with_settings
def chat(
    ctx: typer.Context,
    resume: Annotated[Path | None, typer.Option(help="Reopen a saved transcript (JSONL).")] = None,
    continue_: Annotated[
        bool, typer.Option("--continue", "-c", help="Reopen the newest saved chat (see /history).")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the versions and exit.")
    ] = False,
    *,
    _settings_given: Given,
) -> None:
    """Open the chat app when no command is given (keys and /commands: docs/tui.md)."""
    if ctx.invoked_subcommand is not None:
        return
    if continue_ and resume is not None:
        raise ConfigError("--continue and --resume both name a chat to reopen; give one")
    _need_a_terminal()
    from rsdchat.tui.app import run_chat

    status = run_chat(_settings_given.settings(), resume, continue_=continue_)
    if status:  # ended by a signal (after saving): 128 + its number, as the shell would say
        raise typer.Exit(status)


def _need_a_terminal() -> None:
    """The chat app reads keys from a terminal and draws on one: anything else is refused at once."""
    for name, stream in (("stdin", sys.stdin), ("stdout", sys.stdout)):
        try:
            ok = stream is not None and stream.isatty()
        except (OSError, ValueError):  # closed
            ok = False
        if not ok:
            state = "closed" if stream is None else "not one"
            raise ConfigError(
                f"the chat app needs a terminal: {name} is {state}; use `rsdchat solve` for scripts"
            )


@app.command()
@with_settings
def solve(
    question: Annotated[
        str | None,
        typer.Argument(
            help="The question. Omit it (or give '-') to read it from stdin; with both, stdin comes first."
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help='JSONL file, one question per line ({"question": …, "id"?, "answer"?}); - for stdin.',
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per question on stdout.")] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Append the JSON objects to FILE as they finish; a rerun skips what it answers.",
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only the answer: no live steps, no cost table.")
    ] = False,
    *,
    _settings_given: Given,
) -> None:
    """Answer questions with RSD and show which model wrote each step.

    With stdout a file or a pipe, stdout gets the reply alone (the live view goes to stderr).

    [dim]Examples:[/dim]

      rsdchat solve "What is 15% of 240?"

      echo "If 3 pens cost $4.50, what do 7 cost?" | rsdchat solve --json

      rsdchat solve -f questions.jsonl --json -o answers.jsonl --concurrency 4
    """
    from rsdchat.cli.solve import quiet_stdout, run_solve, write_failure
    from rsdchat.files import same_file

    if sys.stdout is None:
        raise ConfigError("stdout is closed: send it somewhere instead (> answers.txt, or >/dev/null)")
    if file is not None and output is not None and same_file(file, output):
        raise ConfigError(f"--file and --output are the same file ({output}): give another --output")
    settings = _settings_given.settings()
    problems = _problems(question, file)
    err = Console(stderr=True)
    work = run_solve(settings, problems, as_json=as_json, out=sys.stdout, err=err, output=output, quiet=quiet)
    try:
        outcome = running.run(work)
    except OSError as exc:  # stdout is full, or closed by its reader
        failure = write_failure(exc)
        quiet_stdout()
        if failure is None:
            raise typer.Exit(0) from None
        raise failure from None
    if outcome.errors:
        raise typer.Exit(1)


def _problems(question: str | None, file: Path | None) -> list[Problem]:
    from rsdchat.cli.solve import stdin_is_terminal, stdin_text

    if file is not None and question is not None:
        raise ConfigError("give a question or --file, not both")
    if file is not None:
        problems = load_jsonl_questions(file)
        if not problems:
            raise ConfigError(f"no questions in {'stdin' if str(file) == '-' else file}")
        return problems
    piped = stdin_text() if question is None or question == "-" or not stdin_is_terminal() else None
    if question is None or question == "-":
        if piped is None:
            raise ConfigError("no question: pass it as an argument, on stdin, or with --file")
        question = piped
    elif piped and piped.strip():
        question = f"{piped.strip()}\n\n{question}"  # cat notes.txt | rsdchat solve "summarise"
    if not question.strip():
        raise ConfigError("the question is empty")
    return [Problem(id="q1", question=question.strip(), reference="")]


use_everywhere(app)  # after the last command: each one's --help is helptext's


def main() -> None:
    """Console entry point: user mistakes get one line and exit 2, never a traceback."""
    print_on_stderr()  # what backends say while they start
    try:
        app()
    except RsdchatError as exc:
        message = escape(redact(str(exc)))  # a key never reaches the terminal
        Console(stderr=True).print(
            f"[bold red]rsdchat:[/bold red] {message}", highlight=False, soft_wrap=True
        )
        sys.exit(exc.exit_code)
