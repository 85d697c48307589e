"""`--help` that reads at 80 columns: commands first, option names whole, one spelling of defaults.

Typer's own help squeezes every column of its option table to fit the terminal, so at 80
columns long option names were cut (`--score-target-s…`). Here the option column is as wide
as the names need (up to 40% of the width; a longer name gets a line of its own, its help
under it), a flag shows no metavar and its negation as `--[no-]flag`, and every default is
written `[default: x]`.

What is shown: a command group lists its commands first. Every setting is an option of every
command (`rsdchat.cli.options`), so `--help` shows rsdchat's own settings, grouped, and sums up
each backend plugin's in one line; `--help-all` shows every option. The root command (the
chat app) shows its own options only and says where the settings are.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, ClassVar

import typer
from rich.console import Console
from rich.highlighter import RegexHighlighter
from rich.padding import Padding
from rich.panel import Panel
from rich.text import Text
from rich.theme import Theme
from typer.core import TyperCommand, TyperGroup

from rsdchat.plugins import backend_plugins
from rsdchat.settings import setting_fields

HELP_ALL = "--help-all"
ARGUMENTS, OPTIONS, COMMANDS = "Arguments", "Options", "Commands"
BACKENDS = f"Backend settings ({HELP_ALL} lists them)"
FIRST = ("solve", "eval", "calibrate", "serve")  # the root lists these commands first, then the others
GAP = 2  # spaces between an option's name and its help
THEME = Theme(
    {
        "help.option": "bold cyan",
        "help.metavar": "yellow",
        "help.default": "dim",
        "help.command": "bold cyan",
        "help.required": "red",
    }
)


class _Options(RegexHighlighter):
    """--flags and <metavars> in help text."""

    base_style = "help."
    highlights: ClassVar[list[str]] = [
        r"(^|[\s(`'\"/])(?P<option>--?[A-Za-z][\w-]*)",
        r"(?P<metavar><[\w|.,…-]+>)",
    ]


HIGHLIGHT = _Options()


def console() -> Console:
    """Stdout at the terminal's width ($COLUMNS; $TERMINAL_WIDTH wins, as in Typer)."""
    width = os.environ.get("TERMINAL_WIDTH", "")
    return Console(theme=THEME, width=int(width) if width.isdigit() else None, highlight=False)


def render(command: Any, ctx: typer.Context, *, everything: bool = False) -> None:
    """Print `command`'s help; with `everything`, every option (each backend's settings included)."""
    out = console()
    settings = {s.name: s for s in setting_fields()}
    params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
    is_group = isinstance(command, TyperGroup)
    plugins = backend_plugins()
    panels: dict[str, list[Any]] = {}
    intros: dict[str, str] = {}  # a backend's panel opens with what the backend is
    backends: dict[str, list[Any]] = {}  # backend plugin -> its setting options
    for param in params:
        setting = settings.get(param.name or "")
        owner = setting.owners[0] if setting is not None else "core"
        if setting is not None and not everything and is_group:
            continue  # the chat app's settings: `rsdchat --help-all`, `rsdchat solve --help`
        if owner != "core" and not everything:
            backends.setdefault(owner, []).append(param)
            continue
        default = ARGUMENTS if param.param_type_name == "argument" else OPTIONS
        panel = getattr(param, "rich_help_panel", None) or default
        panels.setdefault(panel, []).append(param)
        if owner in plugins:
            intros[panel] = plugins[owner].title
    first = {k: panels[k] for k in (ARGUMENTS, OPTIONS) if k in panels}  # then the settings' panels
    panels = first | panels
    rows = {name: [_option_row(p, ctx) for p in members] for name, members in panels.items()}
    if backends:
        rows[BACKENDS] = _backend_rows(backends, plugins)
    commands = _command_rows(command, ctx) if is_group else {}
    most = max(12, (out.width - 4) * 2 // 5)  # a longer name gets a line of its own
    column, command_column = (
        max(
            (row[0].cell_len for table in tables.values() for row in table if row[0].cell_len <= most),
            default=0,
        )
        for tables in (rows, commands)
    )

    out.print(Padding(Text(command.get_usage(ctx).strip(), style="bold"), (1, 1, 1, 1)))
    for block in _description(command.help or ""):
        out.print(Padding(block, (0, 1, 1, 1)))
    for title, table in commands.items():
        out.print(_panel(title, table, command_column, out))
    for title, table in rows.items():
        out.print(_panel(title, table, column, out, intros.get(title, "")))
    path = ctx.command_path
    if is_group and not everything:
        note = (
            "Settings (`--delta 0.9`, `--draft …`) are options here and of every command: "
            f"`rsdchat solve --help` lists rsdchat's own, `{path} {HELP_ALL}` every one; "
            "`rsdchat config` shows their values."
        )
        out.print(Padding(HIGHLIGHT(Text(note, style="dim")), (0, 1, 1, 1)))
    if command.epilog:
        out.print(Padding(_markup(inspect.cleandoc(command.epilog)), (1, 1, 0, 1)))


def help_all(ctx: typer.Context, value: bool) -> None:
    """The `--help-all` option's callback: every option, then exit."""
    if value and not ctx.resilient_parsing:
        render(ctx.command, ctx, everything=True)
        raise typer.Exit()


class HelpCommand(TyperCommand):
    """A command whose --help is `render`'s."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        render(self, ctx)


class HelpGroup(TyperGroup):
    """The root command: its --help is `render`'s, its commands listed in a useful order."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        render(self, ctx)

    def list_commands(self, ctx: Any) -> list[str]:
        names = list(super().list_commands(ctx))
        return [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]


def use_everywhere(app: typer.Typer) -> None:
    """Every command of `app` (a backend plugin's too) gets `HelpCommand`'s --help."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):  # Typer's default
            info.cls = HelpCommand


# -- rows ------------------------------------------------------------------------------------


def _markup(text: str, style: str = "") -> Text:
    return HIGHLIGHT(Text.from_markup(text, style=style))


def _description(help_text: str) -> Iterable[Text]:
    """The first paragraph as it is, the others dim (as Typer shows them)."""
    text = inspect.cleandoc(help_text).partition("\f")[0].strip()
    if not text:
        return []
    first, *rest = (_reflow(paragraph) for paragraph in text.split("\n\n"))
    blocks = [_markup(first)]
    if rest:
        blocks.append(_markup("\n\n".join(rest), style="dim"))
    return blocks


def _reflow(paragraph: str) -> str:
    """A paragraph wrapped in the source as one line (the terminal wraps it); indented lines as they are."""
    lines = paragraph.split("\n")
    return paragraph if any(line.startswith(" ") for line in lines) else " ".join(lines)


def _option_row(param: Any, ctx: typer.Context) -> tuple[Text, Text]:
    name = Text()
    if param.param_type_name == "argument":
        name.append(" ".join(param.get_usage_pieces(ctx)), "help.metavar")  # as the usage line says
    else:
        longs = [o for o in param.opts if o.startswith("--")]
        shorts = [o for o in param.opts if not o.startswith("--")]
        negative = list(getattr(param, "secondary_opts", []))
        if longs and negative == ["--no-" + longs[0][2:]]:
            longs[0], negative = "--[no-]" + longs[0][2:], []
        name.append(", ".join([*shorts, *longs, *negative]), "help.option")
        metavar = _metavar(param, ctx)
        if metavar:
            name.append(" ")
            name.append(metavar, "help.metavar")
    text = _markup(param.help or "")
    default = _default(param)
    if default:
        text.append(" " if text else "")
        text.append(f"[default: {default}]", "help.default")
    if param.required and param.param_type_name != "argument":
        text.append(" " if text else "")
        text.append("[required]", "help.required")
    return name, text


def _metavar(param: Any, ctx: typer.Context) -> str:
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    if param.metavar:
        return str(param.metavar)
    display = getattr(param, "display_type", None)  # Typer >= 0.22: '<int>'
    if display is not None:
        return str(display(ctx)).replace(" range", "")
    try:
        return str(param.make_metavar(ctx))  # click >= 8.2
    except TypeError:  # pragma: no cover - older click
        return str(param.make_metavar())


def _default(param: Any) -> str:
    """The default as `[default: …]` shows it; '' for none (a flag that is off, an unset option)."""
    shown = getattr(param, "show_default", None)
    if isinstance(shown, str):
        return shown
    if shown is False or param.param_type_name == "argument":
        return ""
    value = param.default
    if callable(value) or value is None or (getattr(param, "is_flag", False) and not value):
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _backend_rows(backends: dict[str, list[Any]], plugins: Mapping[str, Any]) -> list[tuple[Text, Text]]:
    rows = []
    for name, params in backends.items():
        title = f": {plugins[name].title}" if name in plugins else ""
        rows.append((Text(name, "help.command"), Text(f"{len(params)} settings{title}")))
    return rows


def _command_rows(group: Any, ctx: typer.Context) -> dict[str, list[tuple[Text, Text]]]:
    panels: dict[str, list[tuple[Text, Text]]] = {}
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        help_text = inspect.cleandoc(command.short_help or command.help or "").split("\n\n")[0]
        row = (Text(name, "help.command"), _markup(help_text.replace("\n", " ")))
        panels.setdefault(getattr(command, "rich_help_panel", None) or COMMANDS, []).append(row)
    return panels


def _panel(title: str, rows: list[tuple[Text, Text]], column: int, out: Console, intro: str = "") -> Panel:
    """`rows` as two columns, names `column` wide; a longer name gets a line of its own."""
    inner = out.width - 4  # the border and one space each side
    width = max(20, inner - column - GAP)
    body = Text(f"{intro}\n", style="dim") if intro else Text()
    for name, text in rows:
        lines = list(text.wrap(out, width)) if text.plain else [Text()]
        if name.cell_len > column:
            body.append_text(name)
            body.append("\n")
            first = Text(" " * (column + GAP))
        else:
            first = name + Text(" " * (column + GAP - name.cell_len))
        for i, line in enumerate(lines):
            body.append_text(first if i == 0 else Text(" " * (column + GAP)))
            body.append_text(line)
            body.append("\n")
    body.rstrip()
    return Panel(body, title=title, title_align="left", border_style="dim", padding=(0, 1))
