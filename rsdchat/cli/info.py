"""The commands that say what is installed and configured: rewards, backends, config, doctor."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from rsdchat.cli import running
from rsdchat.cli.options import Given, with_settings
from rsdchat.core.errors import ConfigError, redact
from rsdchat.plugins import REWARDS, backend_plugins, distribution, reward_plugins
from rsdchat.settings import default_config_path, dump
from rsdchat.strict_json import dumps

JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")]


def rewards(as_json: JsonOpt = False) -> None:
    """List the reward sources and what each one measures."""
    rows = [
        {"name": p.name, "description": p.description, "cost": p.cost, "from": distribution(p.name, REWARDS)}
        for p in reward_plugins().values()
    ]
    if as_json:
        print(dumps(rows))
        return
    table = Table("name", "what it measures", "runs", "from", show_edge=False, header_style="bold")
    for row in rows:
        table.add_row(row["name"], row["description"], row["cost"], f"[dim]{row['from']}[/dim]")
    console = Console()
    console.print(table)
    console.print("Combine sources with '*', e.g. --reward 'arithmetic*draft-confidence'.", style="dim")


def backends(as_json: JsonOpt = False) -> None:
    """List the installed backend plugins."""
    found = backend_plugins()
    rows = [{"name": n, "title": p.title, "from": distribution(n)} for n, p in found.items()]
    if as_json:
        print(dumps(rows))
        return
    if not found:
        Console().print("no backend installed: pip install rsdchat-llamacpp (or rsdchat-openai)")
        raise typer.Exit(1)
    table = Table("name", "what", "from", show_edge=False, header_style="bold")
    for row in rows:
        table.add_row(row["name"], row["title"], f"[dim]{row['from']}[/dim]")
    Console().print(table)


@with_settings
def config(
    what: Annotated[str | None, typer.Argument(help="'path': print the config file's path only.")] = None,
    as_json: JsonOpt = False,
    *,
    _settings_given: Given,
) -> None:
    """Print the resolved settings (defaults < config file < RSDCHAT_* env < flags) as TOML.

    Its first line, a TOML comment, names the config file it read (or where one would be read).
    `rsdchat config path` prints where the config file is read from (it may not exist yet).
    """
    if what is not None:
        if what != "path":
            raise ConfigError(f"unknown config action {what!r}; the one there is: path")
        path = _settings_given.config or default_config_path()
        print(dumps({"path": str(path), "exists": path.is_file()}) if as_json else path)
        return
    tables = {
        name: {k: redact(v) if isinstance(v, str) else v for k, v in values.items()}
        for name, values in dump(_settings_given.settings())
    }
    if as_json:
        print(dumps({"settings": tables.pop(""), **tables}))
        return
    path = (_settings_given.config or default_config_path()).expanduser()
    print(f"# config file: {path}" if path.is_file() else f"# config file: none ({path} does not exist)")
    for table, values in tables.items():
        if table:
            print(f"\n[{table}]")
        for key, value in values.items():
            if value is not None:
                print(f"{key} = {_toml(value)}")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


@with_settings
def doctor(as_json: JsonOpt = False, *, _settings_given: Given) -> None:
    """Check each configured role: reachable, model served, streaming, log-probabilities, latency."""
    from rsdchat.doctor import diagnose, render, to_json

    checks = running.run(diagnose(_settings_given.settings()))
    if as_json:
        print(dumps(to_json(checks)))
    else:
        Console().print(render(checks))
    raise typer.Exit(0 if all(check.ok for check in checks) else 1)


def info_commands(app: typer.Typer) -> None:
    """Register these commands on `app`."""
    app.command()(rewards)
    app.command()(backends)
    app.command("config")(config)
    app.command()(doctor)
