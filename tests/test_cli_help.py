"""`--help` as a user reads it at 80 columns: commands first, option names whole, short, one "default".

Model-free: Typer's CliRunner with COLUMNS=80 (the width `rsdchat.cli.helptext` wraps to).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from rsdchat.cli import app
from rsdchat.settings import setting_fields

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

COMMANDS = [[], ["solve"], ["eval"], ["serve"], ["calibrate"], ["config"], ["doctor"]]
IDS = [" ".join(["rsdchat", *c]) for c in COMMANDS]
ROOT_LINES, COMMAND_LINES = 60, 130  # at 80 columns; before: 351 and 342-466


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("RSDCHAT_CONFIG", raising=False)


def shown(*args: str, width: int = 80) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": str(width), "TERMINAL_WIDTH": None})
    assert result.exit_code == 0, result.output
    return result.output


def command(args: list[str]) -> Any:
    group = typer.main.get_command(app)
    return group.commands[args[0]] if args else group  # type: ignore[attr-defined]


def options(args: list[str], *, everything: bool) -> list[Any]:
    """The options `--help` (or `--help-all`) of `rsdchat ARGS` should list, each by name."""
    settings = {s.name: s for s in setting_fields()}
    found = []
    for param in command(args).params:
        if param.param_type_name != "option" or param.hidden:
            continue
        setting = settings.get(param.name)
        if setting is not None and not everything and (not args or setting.owners[0] != "core"):
            continue  # the root's settings and the backends' are left to --help-all
        found.append(param)
    return found


def named(option: str, text: str) -> bool:
    """`option` appears whole: `--reuse-draft` (`--no-reuse-draft`) as itself or in `--[no-]reuse-draft`."""
    bare = re.escape(option[2:])
    both = re.escape(option.removeprefix("--no-").removeprefix("--"))
    return re.search(rf"(?<![\w\]-])--{bare}(?![\w-])|--\[no-\]{both}(?![\w-])", text) is not None


@pytest.mark.parametrize("flag", ["--help", "--help-all"])
@pytest.mark.parametrize("args", COMMANDS, ids=IDS)
def test_every_option_name_is_whole_at_80_columns(args: list[str], flag: str) -> None:
    text = shown(*args, flag)
    assert not re.search(r"--[\w\[\]-]+…", text), "an option name is cut"
    expected = options(args, everything=flag == "--help-all")
    missing = [opt for p in expected for opt in (*p.opts, *p.secondary_opts) if opt.startswith("--")]
    missing = [opt for opt in missing if not named(opt, text)]
    assert not missing


def test_help_all_lists_every_setting() -> None:
    for args in COMMANDS:
        text = shown(*args, "--help-all")
        assert [s.flag for s in setting_fields() if not named(s.flag, text)] == [], args


def test_the_root_lists_its_commands_first_and_is_short() -> None:
    text = shown("--help")
    lines = text.splitlines()
    assert len(lines) < ROOT_LINES, len(lines)
    commands = next(i for i, line in enumerate(lines) if "─ Commands ─" in line)
    assert commands < next(i for i, line in enumerate(lines) if "─ Options ─" in line)
    for name in ("solve", "eval", "calibrate", "serve", "config", "doctor", "rewards", "backends"):
        assert re.search(rf"│ {name} ", text), name
    assert "--max-step-tokens" not in text and "--n-ctx" not in text  # settings: solve --help
    assert "rsdchat solve --help" in text and "rsdchat --help-all" in text  # … and where they are


@pytest.mark.parametrize("args", [["solve"], ["eval"], ["serve"]], ids=["solve", "eval", "serve"])
def test_a_command_help_is_short_and_sums_up_the_backends(args: list[str]) -> None:
    text = shown(*args, "--help")
    assert len(text.splitlines()) < COMMAND_LINES
    assert "Backend settings" in text and "--n-ctx" not in text
    for name in ("--delta", "--reward", "--mode", "--draft", "--target", "--max-tokens"):
        assert named(name, text), name
    assert "--n-ctx" in shown(*args, "--help-all")


def test_flags_have_no_metavar() -> None:
    root = shown("--help")
    assert re.search(r"│ --version +Print the versions", root)
    assert re.search(r"│ --json +One JSON object per question", shown("solve", "--help"))
    for args in COMMANDS:
        assert "<bool>" not in shown(*args, "--help-all"), args


def test_one_spelling_of_defaults() -> None:
    for args in COMMANDS:
        for flag in ("--help", "--help-all"):
            text = " ".join(shown(*args, flag).replace("│", " ").split())  # wrapped lines joined
            others = [
                text[max(0, m.start() - 20) : m.end() + 20]
                for m in re.finditer(r"\bdefault\b", text, flags=re.IGNORECASE)
                if text[m.start() - 1 : m.end() + 1] != "[default:"
            ]
            assert others == [], (args, flag)
    assert "[default: 0.5:0.99:0.01]" in shown("calibrate", "--help")
    assert "[default: all cores]" in shown("solve", "--help-all")  # "(default: all cores)" in its text


def test_settings_before_the_command_still_work() -> None:
    result = CliRunner().invoke(app, ["--delta", "0.9", "--threads", "2", "config", "--json"])
    assert result.exit_code == 0, result.output
    assert '"delta": 0.9' in result.output and '"threads": 2' in result.output


def test_config_names_the_file_it_read(tmp_path: Path) -> None:
    missing = tmp_path / "config" / "rsdchat" / "config.toml"
    text = shown("config")
    assert text.splitlines()[0] == f"# config file: none ({missing} does not exist)"
    assert tomllib.loads(text)["backend"]  # still TOML: the line is a comment
    chosen = tmp_path / "mine.toml"
    chosen.write_text("delta = 0.8\n")
    text = shown("config", "--config", str(chosen))
    assert text.splitlines()[0] == f"# config file: {chosen}"
    assert tomllib.loads(text)["delta"] == 0.8
