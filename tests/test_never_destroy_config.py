"""A user's config file survives every mistake: `calibrate --write` edits it as TOML or not at all,
and a config that cannot be used (not UTF-8, a folder, a mistyped backend table) is one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rsdchat.cli.calibrate import write_setting
from rsdchat.core.errors import ConfigError
from rsdchat.plugins import backend_names

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

RSDCHAT = [sys.executable, "-c", "from rsdchat.cli import main; main()"]

MULTILINE = '''# my settings
system_prompt = """You solve problems.
[this line starts with a bracket, inside the string]
Answer briefly."""
max_steps = 12

[backends.llamacpp]
n_ctx = 2048
'''


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("RSDCHAT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def rsdchat_config(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RSDCHAT_CONFIG": str(config)}
    return subprocess.run([*RSDCHAT, "config"], capture_output=True, text=True, timeout=120, env=env)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


# -- calibrate --write ---------------------------------------------------------------------------


def test_a_line_starting_with_a_bracket_inside_a_string_is_not_a_table(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(MULTILINE, encoding="utf-8")
    write_setting(config, "delta", 0.9)
    data = tomllib.loads(config.read_text(encoding="utf-8"))
    assert data["delta"] == 0.9
    assert data["system_prompt"] == tomllib.loads(MULTILINE)["system_prompt"]  # the string as it was
    assert data["max_steps"] == 12 and data["backends"] == {"llamacpp": {"n_ctx": 2048}}
    assert config.read_text(encoding="utf-8").startswith(MULTILINE.split("[backends")[0].rstrip("\n"))


def test_a_fresh_config_and_an_existing_key(tmp_path: Path) -> None:
    fresh = tmp_path / "new" / "config.toml"
    write_setting(fresh, "delta", 0.8)
    assert fresh.read_text(encoding="utf-8") == "delta = 0.8\n"
    config = tmp_path / "config.toml"
    config.write_text('# mine\nreward = "arithmetic"\ndelta = 0.5  # tuned\n\n[backends.openai]\nurl = "x"\n')
    write_setting(config, "delta", 0.72)
    assert config.read_text(encoding="utf-8") == (
        '# mine\nreward = "arithmetic"\ndelta = 0.72  # tuned\n\n[backends.openai]\nurl = "x"\n'
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


@pytest.mark.parametrize(
    "text",
    [
        "max_steps = \n[unclosed\n",  # not TOML
        'delta = 0.5\nsystem_prompt = """never closed\n[x]\n',  # a string that never ends
    ],
)
def test_a_config_that_is_not_toml_is_refused_untouched(tmp_path: Path, text: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        write_setting(config, "delta", 0.9)
    assert info.value.exit_code == 2 and "\n" not in str(info.value) and str(config) in str(info.value)
    assert config.read_text(encoding="utf-8") == text


def test_a_config_that_is_not_utf8_is_refused_untouched(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_bytes(b'system_prompt = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        write_setting(config, "delta", 0.9)
    assert config.read_bytes() == b'system_prompt = "caf\xe9"\n'


# -- a config that cannot be used: one line, exit 2 -----------------------------------------------


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_bytes(b'system_prompt = "caf\xe9"\n')
    assert f"config file {config} is not UTF-8 text" in one_line(rsdchat_config(config))


def test_a_config_path_that_is_a_folder_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "config.toml"
    folder.mkdir()
    message = one_line(rsdchat_config(folder))
    assert f"config file {folder} is a folder, not a file" in message and "not found" not in message


def test_a_mistyped_backend_table_names_the_installed_backends(tmp_path: Path) -> None:
    installed = backend_names()
    assert installed, "no backend plugin installed"
    config = tmp_path / "config.toml"
    config.write_text('max_steps = 5\n\n[backends.openia]\nurl = "http://localhost:8000/v1"\n')
    message = one_line(rsdchat_config(config))
    assert "[backends.openia] is not an installed backend" in message
    assert f"installed backends: {', '.join(installed)}" in message
    if "openai" in installed:
        assert "did you mean [backends.openai]?" in message
    config.write_text(f"max_steps = 5\n\n[backends.{installed[0]}]\n")  # an installed one is fine
    result = rsdchat_config(config)
    assert result.returncode == 0, result.stderr
