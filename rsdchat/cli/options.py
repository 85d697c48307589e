"""Every setting as a command-line option, generated from the settings models, for every command.

`@with_settings` gives a Typer command one `--<field>` option per setting of the core
`Settings` and of each installed backend plugin (help text, default and --help panel
from the model), plus `--config` and `--help-all` (`--help` sums up the backends' settings:
`rsdchat.cli.helptext`). The command receives them as one `Given`; options
given to `rsdchat` itself, before the subcommand, count too (the subcommand's win).
"""

from __future__ import annotations

import functools
import inspect
import math
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar, Union, get_args, get_origin

import typer
from pydantic_core import PydanticUndefined
from rich.markup import escape

from rsdchat.cli.helptext import HELP_ALL, help_all
from rsdchat.core.errors import ConfigError
from rsdchat.settings import SettingField, Settings, load_settings, setting_fields

F = TypeVar("F", bound=Callable[..., Any])
CONFIG_HELP = "TOML settings file."
CONFIG_DEFAULT = "$RSDCHAT_CONFIG, else ~/.config/rsdchat/config.toml"
HELP_ALL_HELP = "Show every option, each backend's settings included, and exit."
PARAM = "_settings_given"  # the parameter the wrapped command receives the options in
CONTEXT = "_settings_ctx"


@dataclass(frozen=True)
class Given:
    """The setting options given on the command line, not yet resolved."""

    config: Path | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    sweeps: dict[str, list[float]] = field(default_factory=dict)  # a setting given several values

    def over(self, parent: Given | None) -> Given:
        """These options on top of those given before the subcommand."""
        if parent is None:
            return self
        flags = {k: v for k, v in parent.flags.items() if k not in self.sweeps}
        return Given(self.config or parent.config, {**flags, **self.flags}, self.sweeps)

    def settings(self) -> Settings:
        """Resolve: defaults < config file < RSDCHAT_* environment < these flags."""
        return load_settings(self.config, **self.flags)


def _inner(annotation: Any) -> Any:
    """`float | None` -> float (the option's type; unset is always None)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation


def _panel(setting: SettingField) -> str:
    extra = setting.info.json_schema_extra
    if isinstance(extra, dict) and extra.get("panel"):
        return str(extra["panel"])
    return f"Backend {setting.owners[0]}"  # its --help panel opens with the plugin's title


DEFAULT_IN_HELP = re.compile(
    r"\s*\((?:(?P<before>[^()]*?);\s*)?default(?P<scope> for [^:()]*)?:\s*(?P<value>[^()]*)\)\s*$"
)


def _help(setting: SettingField) -> tuple[str, str | None]:
    """The option's help and its default as `[default: …]` shows it (None: nothing to show).

    A description that ends with its own "(default: …)" (a setting unset by default: "all
    cores") gives that as the default, so that every default is spelled the same way.
    """
    text = setting.info.description or setting.name
    extra = setting.info.json_schema_extra
    shown = extra.get("shown_default") if isinstance(extra, dict) else None
    found = DEFAULT_IN_HELP.search(text)
    if found is not None:
        before = found.group("before")
        text = text[: found.start()] + (f" ({before})" if before else "")
        scope = found.group("scope")
        shown = shown or found.group("value").strip() + (f" ({scope.strip()})" if scope else "")
    default = setting.info.default
    if shown is None and default is not None and default is not PydanticUndefined:
        value = default.value if isinstance(default, Enum) else default
        if isinstance(value, bool):
            shown = "on" if value else "off"
        elif isinstance(value, str) and (not value or value != value.strip() or not value.isprintable()):
            shown = repr(value)
        else:
            shown = str(value)
    return escape(text), None if shown is None else str(shown)  # the default is shown as plain text


def _sweepable(setting: SettingField) -> bool:
    return _inner(setting.info.annotation) in (int, float)


def parse_values(text: str, setting: str) -> list[float]:
    """'0.5:0.9:0.1' -> [0.5, 0.6, 0.7, 0.8, 0.9]; '1,2' -> [1, 2]; '3' -> [3]."""
    try:
        if ":" in text:
            low, high, step = (float(part) for part in text.split(":"))
            if step <= 0 or high < low:
                raise ValueError
            count = math.floor((high - low) / step + 1e-9) + 1
            return [round(low + i * step, 10) for i in range(count)]
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"setting {setting}: give a number, a list A,B,C or a range LOW:HIGH:STEP, got {text!r}"
        ) from None


def _option(setting: SettingField, sweeps: bool = False) -> inspect.Parameter:
    kind = _inner(setting.info.annotation)
    flag = setting.flag
    decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
    help_text, default = _help(setting)
    metavar = None
    if sweeps and _sweepable(setting):  # several values: a list A,B,C or a range LOW:HIGH:STEP
        metavar, kind = f"<{kind.__name__},…>", str
    option = typer.Option(
        *decls,
        help=help_text,
        rich_help_panel=_panel(setting),
        show_default=default if default is not None else False,
        metavar=metavar,
    )
    annotation = Annotated[Optional[kind], option]  # type: ignore[valid-type]  # noqa: UP045
    return inspect.Parameter(
        setting.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
    )


def with_settings(command: F | None = None, *, sweeps: bool = False) -> Any:
    """Add `--config` and every setting option to `command`, which receives them as `_settings_given`.

    With `sweeps`, a numeric setting may be given several values (`--delta 0.5:0.9:0.1`):
    they arrive in `Given.sweeps`.
    """
    if command is None:
        return functools.partial(with_settings, sweeps=sweeps)
    own = inspect.signature(command, eval_str=True)
    settings = setting_fields()
    taken = set(own.parameters)
    clash = [s.name for s in settings if s.name in taken]
    if clash:
        raise TypeError(f"{command.__name__}: parameters {clash} shadow settings")
    own_ctx = next((p.name for p in own.parameters.values() if p.annotation is typer.Context), None)
    context = (
        []
        if own_ctx
        else [inspect.Parameter(CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]
    )
    extra = [
        *context,
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Optional[Path],  # noqa: UP045
                typer.Option("--config", help=CONFIG_HELP, show_default=CONFIG_DEFAULT),
            ],
        ),
        inspect.Parameter(
            "help_all",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[
                bool,
                typer.Option(HELP_ALL, help=HELP_ALL_HELP, is_eager=True, callback=help_all),
            ],
        ),
        *(_option(setting, sweeps) for setting in settings),
    ]
    swept = {s.name for s in settings if sweeps and _sweepable(s)}
    kept = [p for p in own.parameters.values() if p.name != PARAM]
    names = [s.name for s in settings]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx: typer.Context = kwargs[own_ctx] if own_ctx else kwargs.pop(CONTEXT)
        flags = {name: value for name in names if (value := kwargs.pop(name)) is not None}
        several = {}
        for name in swept & set(flags):
            values = parse_values(str(flags.pop(name)), name)
            if len(values) == 1:
                flags[name] = values[0]
            else:
                several[name] = values
        kwargs.pop("help_all")  # its callback prints the help and exits
        given = Given(kwargs.pop("config"), flags, several)
        parent = ctx.parent.obj if ctx.parent is not None and isinstance(ctx.parent.obj, Given) else None
        given = given.over(parent)
        ctx.obj = given
        return command(*args, **kwargs, **{PARAM: given})

    parameters = sorted([*kept, *extra], key=lambda p: p.kind)
    wrapper.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper
