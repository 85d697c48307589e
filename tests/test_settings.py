"""Settings: defaults < TOML file < RSDCHAT_* environment < overrides, and one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import Field, ValidationError

from rsdchat.core.errors import ConfigError
from rsdchat.core.policy import Mode
from rsdchat.core.weighting import BinaryStep, Constant, Logistic
from rsdchat.in_force import in_force
from rsdchat.plugins import BackendPlugin, PluginConfig
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat.settings import Settings, default_config_path, dump, load_settings, setting_fields
from rsdchat.testing import ScriptedReward


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No RSDCHAT_* variable and no real home: the config lives under tmp_path/xdg."""
    for name in list(os.environ):
        if name.upper().startswith("RSDCHAT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path


class AlphaConfig(PluginConfig):
    """A stand-in plugin's settings (core tests need no real backend plugin)."""

    n_ctx: int = Field(4096, ge=256, description="context window")
    read_timeout: float = Field(30.0, gt=0, description="seconds")


class BetaConfig(PluginConfig):
    read_timeout: float = Field(60.0, gt=0, description="seconds")
    url: str | None = Field(None, description="where")


PLUGINS = {
    "alpha": BackendPlugin("alpha", AlphaConfig, lambda config: None, "the first"),  # type: ignore[arg-type,return-value]
    "beta": BackendPlugin("beta", BetaConfig, lambda config: None, "the second"),  # type: ignore[arg-type,return-value]
}


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two stand-in backend plugins instead of the installed ones."""
    monkeypatch.setattr("rsdchat.settings.backend_plugins", lambda: PLUGINS)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "xdg" / "rsdchat" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_defaults_without_any_file(isolated: Path) -> None:
    assert default_config_path() == isolated / "xdg" / "rsdchat" / "config.toml"
    settings = load_settings()
    assert type(settings) is Settings
    assert settings.delta is None and settings.weighting == "binary" and settings.mode is Mode.RSD
    assert (settings.max_steps, settings.max_tokens, settings.step_delimiter) == (32, 1024, "\n\n")
    assert settings.system_prompt == MATH_SYSTEM_PROMPT


def test_xdg_config_file_is_read(isolated: Path) -> None:
    write_config(isolated, 'max_steps = 5\nweighting = "clip"\nmode = "target-only"\n')
    settings = load_settings()
    assert (settings.max_steps, settings.weighting, settings.mode) == (5, "clip", Mode.TARGET_ONLY)


def test_rsdchat_config_variable_wins_over_xdg(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(isolated, "max_steps = 5\n")
    other = isolated / "other.toml"
    other.write_text("max_steps = 6\n", encoding="utf-8")
    monkeypatch.setenv("RSDCHAT_CONFIG", str(other))
    assert default_config_path() == other
    assert load_settings().max_steps == 6
    explicit = isolated / "explicit.toml"
    explicit.write_text("max_steps = 8\n", encoding="utf-8")
    assert load_settings(explicit).max_steps == 8


def test_precedence_defaults_file_env_overrides(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(isolated, 'max_steps = 5\nalpha = 3.0\nweighting = "logistic"\nseed = 1\n')
    monkeypatch.setenv("RSDCHAT_MAX_STEPS", "7")
    monkeypatch.setenv("RSDCHAT_ALPHA", "4.5")
    settings = load_settings(alpha=6.0)
    assert settings.max_tokens == 1024  # default: set nowhere
    assert settings.weighting == "logistic" and settings.seed == 1  # file only
    assert settings.max_steps == 7  # env beats file
    assert settings.alpha == 6.0  # override beats env and file


def test_none_overrides_are_ignored(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(isolated, "max_steps = 5\n")
    monkeypatch.setenv("RSDCHAT_SEED", "9")
    settings = load_settings(max_steps=None, seed=None, delta=None, weighting=None)
    assert (settings.max_steps, settings.seed, settings.delta, settings.weighting) == (5, 9, None, "binary")


def test_settings_are_frozen() -> None:
    settings = load_settings(max_steps=3)
    with pytest.raises(ValidationError):
        settings.max_steps = 4  # type: ignore[misc]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "abc"])
def test_bad_delta_from_env(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSDCHAT_DELTA", value)
    message = config_error()
    assert message.startswith("setting delta (RSDCHAT_DELTA):") and repr(value) in message


@pytest.mark.parametrize("value", ["nan", "inf", "abc", float("nan"), float("-inf")])
def test_bad_delta_from_override(value: object) -> None:
    assert config_error(delta=value).startswith("setting delta (flag):")


@pytest.mark.parametrize("value", ["nan", "inf", '"abc"'])
def test_bad_delta_from_file(value: str, isolated: Path) -> None:
    path = write_config(isolated, f"delta = {value}\n")
    assert config_error().startswith(f"setting delta (config file {path}):")


@pytest.mark.parametrize(
    ("setting", "value"),
    [("alpha", "nan"), ("beta", "inf"), ("temperature", "-0.5"), ("p", "1.5"), ("top_p", "0"),
     ("max_steps", "0"), ("mode", "fast"), ("concurrency", "many"), ("weighting", "smooth"),
     ("reward", "oracle"), ("reward", "arithmetic*oracle")],
)  # fmt: skip
def test_other_bad_values_name_the_setting(setting: str, value: str) -> None:
    assert config_error(**{setting: value}).startswith(f"setting {setting} (flag):")


def test_names_are_checked_wherever_they_come_from(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSDCHAT_WEIGHTING", "bogus")
    assert "unknown weighting 'bogus'; choose one of: binary" in config_error()
    monkeypatch.delenv("RSDCHAT_WEIGHTING")
    write_config(isolated, 'mode = "draft-only"\nreward = "bogus"\n')  # checked even when unused
    message = config_error()
    assert "unknown reward 'bogus'; choose one of: arithmetic, " in message and "draft-confidence" in message


def test_unknown_key_in_toml(isolated: Path) -> None:
    write_config(isolated, "max_steps = 5\nmax_stepz = 6\n")
    message = config_error()
    assert "max_stepz" in message and "not a setting" in message


def test_unknown_override_key() -> None:
    assert "bogus" in config_error(bogus=1)


def test_bad_toml_syntax(isolated: Path) -> None:
    path = write_config(isolated, "max_steps = \n[unclosed\n")
    message = config_error()
    assert message.startswith(f"config file {path}")


def test_missing_explicit_config_file(isolated: Path) -> None:
    missing = isolated / "nope.toml"
    with pytest.raises(ConfigError, match="config file not found") as info:
        load_settings(missing)
    assert str(missing) in str(info.value) and "\n" not in str(info.value)


def test_a_config_that_is_not_utf8_or_a_folder_is_one_line(isolated: Path) -> None:
    path = write_config(isolated, "")
    path.write_bytes(b'system_prompt = "caf\xe9"\n')
    assert config_error().startswith(f"config file {path} is not UTF-8 text")
    path.unlink()
    path.mkdir()  # the default path, a folder: not "no config file"
    assert config_error() == f"config file {path} is a folder, not a file"
    assert config_error(config=path) == f"config file {path} is a folder, not a file"  # not "not found"


def test_an_unknown_backend_table_names_the_installed_ones(isolated: Path, plugins: None) -> None:
    path = write_config(isolated, "[backends.alpah]\nn_ctx = 512\n")
    message = config_error()
    assert message.startswith(f"config file {path}: [backends.alpah] is not an installed backend")
    assert "did you mean [backends.alpha]?" in message and "installed backends: alpha, beta" in message


def test_config_errors_exit_with_code_2(isolated: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(isolated / "nope.toml")
    assert info.value.exit_code == 2


def reward(default_delta: float) -> ScriptedReward:
    return ScriptedReward(lambda c, s: 0.0, default_delta=default_delta)


def test_policy_uses_reward_default_delta_when_unset() -> None:
    settings = load_settings()
    assert in_force(settings, reward(0.42)).policy.weighting == BinaryStep(0.42)
    assert in_force(settings, reward(1.0)).policy.weighting == BinaryStep(1.0)
    chosen = load_settings(delta=0.1)
    assert in_force(chosen, reward(0.42)).policy.weighting == BinaryStep(0.1)
    assert in_force(load_settings(delta=0.0), reward(0.42)).policy.weighting == BinaryStep(
        0.0
    )  # 0 is not "unset"
    source = reward(0.5)
    assert in_force(settings, source).policy.reward is source


def test_policy_carries_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSDCHAT_STEP_DELIMITER", "\n---\n")
    settings = load_settings(
        mode="draft-only", weighting="logistic", alpha=3.0, max_steps=4, max_step_tokens=50,
        max_tokens=90, temperature=0.7, top_p=0.9, stop_at_answer=False, score_target_steps=True,
    )  # fmt: skip
    policy = in_force(settings, reward(0.6)).policy
    assert policy.mode is Mode.DRAFT_ONLY and policy.weighting == Logistic(3.0, 0.6)
    assert (policy.max_steps, policy.max_step_tokens, policy.max_tokens) == (4, 50, 90)
    assert (policy.temperature, policy.top_p, policy.stop) == (0.7, 0.9, ("\n---\n",))
    assert policy.stop_at_answer is False and policy.score_target_steps is True
    assert in_force(load_settings(weighting="constant", p=0.25), reward(0.6)).policy.weighting == Constant(
        0.25
    )


# -- backend plugins' own settings -----------------------------------------------------------


def test_plugin_settings_come_from_their_table_env_and_flags(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, plugins: None
) -> None:
    write_config(
        isolated, "max_steps = 5\n[backends.alpha]\nn_ctx = 512\n[backends.beta]\nurl = 'http://x'\n"
    )
    settings = load_settings()
    assert settings.max_steps == 5
    assert settings.backend_config("alpha") == AlphaConfig(n_ctx=512)
    assert settings.backend_config("beta") == BetaConfig(url="http://x")
    monkeypatch.setenv("RSDCHAT_N_CTX", "1024")
    assert load_settings().backend_config("alpha") == AlphaConfig(n_ctx=1024)  # env beats the file
    assert load_settings(n_ctx=2048).backend_config("alpha") == AlphaConfig(n_ctx=2048)  # flag beats env


def test_a_setting_several_plugins_declare_is_one_flag(plugins: None) -> None:
    settings = load_settings(read_timeout=5.0)
    assert settings.backend_config("alpha").read_timeout == 5.0  # type: ignore[attr-defined]
    assert settings.backend_config("beta").read_timeout == 5.0  # type: ignore[attr-defined]
    defaults = load_settings()  # each keeps its own default
    assert (defaults.backend_config("alpha"), defaults.backend_config("beta")) == (
        AlphaConfig(),
        BetaConfig(),
    )
    (shared,) = [field for field in setting_fields() if field.name == "read_timeout"]
    assert (shared.flag, shared.env, shared.owners) == (
        "--read-timeout",
        "RSDCHAT_READ_TIMEOUT",
        ("alpha", "beta"),
    )


def test_plugin_setting_errors_name_the_table(isolated: Path, plugins: None) -> None:
    assert config_error(n_ctx=10).startswith("setting [backends.alpha] n_ctx (flag):")
    path = write_config(isolated, "[backends.alpha]\nnctx = 512\n")
    message = config_error()
    assert message.startswith(f"setting [backends.alpha] nctx (config file {path}): is not a setting")
    write_config(isolated, "n_ctx = 512\n")  # a plugin's key at the top of the file
    assert "n_ctx is a setting of the alpha backend; put it in a [backends.alpha] table" in config_error()


def test_config_dump_has_a_table_per_plugin(plugins: None) -> None:
    tables = dict(dump(load_settings(url="http://y")))
    assert list(tables) == ["", "backends.alpha", "backends.beta"]
    assert tables["backends.beta"] == {"read_timeout": 60.0, "url": "http://y"}
    assert tables[""]["max_steps"] == 32
