"""`rsdchat calibrate`: the largest δ whose share of target steps stays within a budget γ.

Paper Prop. 2.3: under a budget on how often the target may write, the binary step
ω = 1(r ≥ δ) is optimal, with δ the largest threshold that keeps to the budget. This
command finds that δ on a calibration slice (one δ sweep, its steps shared), then checks
it on a held-out slice against target-only, and can write it to the config file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import tomlkit
import tomlkit.exceptions
import typer
from rich.console import Console

from rsdchat.cli import running
from rsdchat.cli.evaluate import evaluate, report, resume_hint
from rsdchat.cli.options import Given, parse_values, with_settings
from rsdchat.core.errors import ConfigError, RsdchatError
from rsdchat.evaluation.data import load_problems
from rsdchat.evaluation.methods import parse_method
from rsdchat.files import Record, read_text, write_atomic
from rsdchat.settings import default_config_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]


def target_share(records: list[Record], method: str) -> float | None:
    """Share of the answers' steps the target wrote under `method`."""
    mine = [r for r in records if r["method"] == method]
    steps = sum(int(r["steps"]) for r in mine)
    return sum(int(r["target_steps"]) for r in mine) / steps if steps else None


def choose_delta(shares: dict[float, float | None], budget: float) -> float | None:
    """The largest δ whose target share is within the budget (None if no δ is)."""
    within = [delta for delta, share in shares.items() if share is not None and share <= budget]
    return max(within) if within else None


def write_setting(path: Path, key: str, value: float) -> None:
    """Set `key = value` at the top level of a TOML config file, keeping everything else as it is.

    The file is edited as TOML (comments, order and strings kept), written whole or not at all,
    and read back: unless it then parses to the same settings with `key` set to `value`, it is
    left as it was and a ConfigError says why. A file that is not TOML is refused untouched.
    """
    path = Path(os.path.realpath(path.expanduser()))  # a linked config: its file is edited, the link kept
    text = read_text(path, "config file") if path.exists() else ""
    try:
        document = tomlkit.parse(text)
        before = tomllib.loads(text)
    except (tomlkit.exceptions.ParseError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML ({exc}); it was left as it is") from None
    document[key] = value
    edited = tomlkit.dumps(document)
    try:
        after = tomllib.loads(edited)
    except tomllib.TOMLDecodeError:
        after = {}
    if after.get(key) != value or {**before, key: value} != after:
        raise ConfigError(
            f"cannot set {key} = {value:g} in {path} safely; it was left as it is: set it by hand"
        )
    write_atomic(path, edited, replace=True)
    try:
        written = tomllib.loads(read_text(path, "config file"))
    except tomllib.TOMLDecodeError:
        written = {}
    if written.get(key) != value:
        raise ConfigError(f"{path} does not read back {key} = {value:g} after writing it; check the file")


def calibrate_command(
    budget: Annotated[
        float, typer.Option("--budget", help="γ: the largest share of steps the target may write.")
    ],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="A packaged benchmark.")] = "gsm8k",
    offset: Annotated[int, typer.Option(help="First calibration question.")] = 0,
    limit: Annotated[int, typer.Option(help="Calibration questions.")] = 20,
    holdout: Annotated[int, typer.Option(help="Held-out questions after them (0: none).")] = 20,
    deltas: Annotated[
        str, typer.Option(help="The δ values tried: LOW:HIGH:STEP or A,B,C.")
    ] = "0.5:0.99:0.01",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Results file.", show_default="rsdchat-calibrate-<dataset>.jsonl"
        ),
    ] = None,
    write: Annotated[bool, typer.Option("--write", help="Write the δ found to the config file.")] = False,
    *,
    _settings_given: Given,
) -> None:
    """Find the largest δ that keeps the target's share of steps within --budget, and check it.

    [dim]Example:[/dim] rsdchat calibrate --budget 0.3 --limit 20 --holdout 20 --write
    """
    if not 0.0 <= budget <= 1.0:
        raise ConfigError(f"--budget must be a share in [0, 1], got {budget:g}")
    err, out = Console(stderr=True), Console()
    settings = _settings_given.settings()
    grid = parse_values(deltas, "deltas")
    problems = load_problems(dataset, start=offset, limit=limit + holdout)
    calibration, held_out = problems[:limit], problems[limit:]
    path = output or Path(f"rsdchat-calibrate-{dataset}.jsonl")
    sweep = [parse_method(f"rsd:delta={delta:g}") for delta in grid]
    try:
        records = running.run(
            evaluate(settings, dataset, calibration, sweep, path, True, err), interrupted=resume_hint(path)
        )
        shares = {delta: target_share(records, spec.text) for delta, spec in zip(grid, sweep, strict=True)}
        for delta, share in shares.items():
            err.print(
                f"δ {delta:g}: target writes {share:.0%} of the steps"
                if share is not None
                else f"δ {delta:g}: –"
            )
        chosen = choose_delta(shares, budget)
        if chosen is None:
            raise ConfigError(
                f"no δ in {deltas} keeps the target within {budget:.0%} of the steps; try lower δ values"
            )
        out.print(
            f"δ = {chosen:g}: the largest δ with the target writing ≤ {budget:.0%} of the steps",
            highlight=False,
        )
        if held_out:
            checks = [parse_method("target-only"), parse_method(f"rsd:delta={chosen:g}")]
            kept = running.run(
                evaluate(settings, dataset, held_out, checks, path, False, err), interrupted=resume_hint(path)
            )
            ids = {p.id for p in held_out}
            report(
                [r for r in kept if r["id"] in ids],
                [c.text for c in checks],
                as_json=False,
                markdown=None,
                out=out,
            )
    except RsdchatError as exc:
        err.print(f"[bold red]rsdchat:[/bold red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    if write:
        config = _settings_given.config or default_config_path()
        write_setting(config, "delta", chosen)
        out.print(f"wrote delta = {chosen:g} to {config}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("calibrate")(with_settings(calibrate_command))
