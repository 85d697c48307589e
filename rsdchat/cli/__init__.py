"""The `rsdchat` command line: the chat app by default, `solve` for one-shot answers."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rsdchat.engine import Mode
from rsdchat.errors import ConfigError, RsdchatError
from rsdchat.evaluation.data import Problem, load_jsonl_questions
from rsdchat.settings import Settings, load_settings
from rsdchat.weighting import WEIGHTINGS

app = typer.Typer(
    name="rsdchat",
    help=(
        "Reward-Guided Speculative Decoding in the terminal: a small draft model writes each "
        "reasoning step, a reward scores it, and the large target model rewrites the steps the "
        "reward rejects.\n\nRun with no command to open the chat app."
    ),
    no_args_is_help=False,
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", help="TOML settings file (default: $RSDCHAT_CONFIG or ~/.config/rsdchat/config.toml)"
    ),
]


@app.callback()
def chat(
    ctx: typer.Context,
    config: ConfigOpt = None,
    resume: Annotated[Path | None, typer.Option(help="Reopen a saved transcript (JSONL).")] = None,
    draft: Annotated[str | None, typer.Option(help="Draft model: embedded name or GGUF path.")] = None,
    target: Annotated[str | None, typer.Option(help="Target model: embedded name or GGUF path.")] = None,
    reward: Annotated[str | None, typer.Option(help="Reward source (see `rsdchat rewards`).")] = None,
    delta: Annotated[float | None, typer.Option(help="Threshold δ.")] = None,
    weighting: Annotated[str | None, typer.Option(help=f"Weighting ω(r): {', '.join(WEIGHTINGS)}.")] = None,
    backend: Annotated[str | None, typer.Option(help="Backend plugin (see `rsdchat backends`).")] = None,
) -> None:
    """Open the chat app when no command is given (keys and /commands: docs/tui.md)."""
    if ctx.invoked_subcommand is not None:
        return
    from rsdchat.tui import run

    overrides = dict(draft=draft, target=target, reward=reward, delta=delta, weighting=weighting)
    run(load_settings(config, backend=backend, **overrides), resume)


@app.command()
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
    delta: Annotated[
        float | None, typer.Option(help="Threshold δ: keep draft steps whose reward ≥ δ.")
    ] = None,
    weighting: Annotated[str | None, typer.Option(help=f"Weighting ω(r): {', '.join(WEIGHTINGS)}.")] = None,
    reward: Annotated[
        str | None, typer.Option(help="Reward source (see `rsdchat rewards`); join with '*' to multiply.")
    ] = None,
    draft: Annotated[str | None, typer.Option(help="Draft model: embedded name or GGUF path.")] = None,
    target: Annotated[str | None, typer.Option(help="Target model: embedded name or GGUF path.")] = None,
    backend: Annotated[str | None, typer.Option(help="Backend plugin (see `rsdchat backends`).")] = None,
    draft_backend: Annotated[str | None, typer.Option(help="Backend of the draft only.")] = None,
    target_backend: Annotated[str | None, typer.Option(help="Backend of the target only.")] = None,
    draft_url: Annotated[str | None, typer.Option(help="Draft server URL(s), comma-separated.")] = None,
    target_url: Annotated[str | None, typer.Option(help="Target server URL(s), comma-separated.")] = None,
    reward_url: Annotated[str | None, typer.Option(help="Reward-model server URL(s).")] = None,
    reward_model: Annotated[str | None, typer.Option(help="Served reward model name.")] = None,
    mode: Annotated[Mode | None, typer.Option(help="rsd, or a single model for comparison.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Most steps in an answer.")] = None,
    max_step_tokens: Annotated[int | None, typer.Option(help="Most tokens in one step.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens in an answer.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed: same seed, same transcript.")] = None,
    temperature: Annotated[float | None, typer.Option(help="0 = greedy.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling mass.")] = None,
    alpha: Annotated[float | None, typer.Option(help="α of logistic / likelihood-ratio.")] = None,
    p: Annotated[float | None, typer.Option(help="p of the constant weighting.")] = None,
    beta: Annotated[float | None, typer.Option(help="β of the hybrid weighting.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Questions in flight at once.")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Answer questions with RSD and show which model wrote each step.

    [dim]Examples:[/dim]

      rsdchat solve "What is 15% of 240?"

      echo "If 3 pens cost $4.50, what do 7 cost?" | rsdchat solve --json

      rsdchat solve --file questions.jsonl --json --delta 0.8 > answers.jsonl
    """
    settings = load_settings(
        config,
        delta=delta,
        weighting=weighting,
        reward=reward,
        draft=draft,
        target=target,
        backend=backend,
        draft_backend=draft_backend,
        target_backend=target_backend,
        draft_url=draft_url,
        target_url=target_url,
        reward_url=reward_url,
        reward_model=reward_model,
        mode=mode,
        max_steps=max_steps,
        max_step_tokens=max_step_tokens,
        max_tokens=max_tokens,
        seed=seed,
        temperature=temperature,
        top_p=top_p,
        alpha=alpha,
        p=p,
        beta=beta,
        concurrency=concurrency,
        system_prompt=system,
    )
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


@app.command()
def rewards() -> None:
    """List the reward sources and what each one measures."""
    from rsdchat.rewards import REWARDS, plugin_rewards

    table = Table("name", "what it measures", show_edge=False, header_style="bold")
    for name, description in REWARDS.items():
        table.add_row(name, description)
    for name, ep in sorted(plugin_rewards().items()):
        doc = (getattr(ep.load(), "__doc__", None) or "").strip().splitlines()
        table.add_row(
            name, (doc[0] if doc else "") + f" [dim]({ep.dist.name if ep.dist else ep.value})[/dim]"
        )
    Console().print(table)
    Console().print("Combine sources with '*', e.g. --reward 'arithmetic*draft-confidence'.", style="dim")


@app.command()
def backends() -> None:
    """List the installed backend plugins."""
    from rsdchat.plugins import available_backends

    found = available_backends()
    if not found:
        Console().print("no backend installed: pip install rsdchat-llamacpp (or rsdchat-openai)")
        raise typer.Exit(1)
    table = Table("name", "provided by", show_edge=False, header_style="bold")
    for name, ep in sorted(found.items()):
        dist = ep.dist.name if ep.dist is not None else ep.value
        table.add_row(name, dist)
    Console().print(table)


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Check each configured role: reachable, model served, streaming, log-probabilities, latency."""
    import json

    from rsdchat.doctor import diagnose, render, to_json

    checks = asyncio.run(diagnose(load_settings(config)))
    if as_json:
        print(json.dumps(to_json(checks)))
    else:
        Console().print(render(checks))
    raise typer.Exit(0 if all(check.ok for check in checks) else 1)


@app.command("config")
def show_config(config: ConfigOpt = None) -> None:
    """Print the resolved settings (defaults < config file < RSDCHAT_* env) as TOML."""
    settings: Settings = load_settings(config)
    for key, value in settings.model_dump(mode="json").items():
        if value is not None:
            print(f"{key} = {_toml(value)}")


def _toml(value: object) -> str:
    import json

    return "true" if value is True else "false" if value is False else json.dumps(value, ensure_ascii=False)


def main() -> None:
    """Console entry point: user mistakes get one line and exit 2, never a traceback."""
    try:
        app()
    except RsdchatError as exc:
        Console(stderr=True).print(f"[bold red]rsdchat:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
