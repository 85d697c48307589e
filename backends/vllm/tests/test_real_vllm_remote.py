"""rsdchat against real vLLM servers (its CPU build, `vllm serve` on loopback), as a user runs it:
`--backend openai` pointed at the servers, every reward that vLLM serves, `doctor` and `eval`.

The servers are session fixtures (conftest.py); each test runs the installed command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from real_vllm import Server, free_port

RSDCHAT = [sys.executable, "-c", "from rsdchat.cli import main; main()"]
QUESTION = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell altogether?"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for name in ("RSDCHAT_CONFIG", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def remote(server: Server, *more: str, draft_urls: str | None = None) -> list[str]:
    return [
        "--backend", "openai", "--draft-url", draft_urls or server.url, "--target-url", server.url,
        "--draft", server.name, "--target", server.name, "--max-steps", "3", "--max-step-tokens", "32", *more,
    ]  # fmt: skip


def solve(*args: str) -> tuple[dict[str, Any], str]:
    done = subprocess.run(
        [*RSDCHAT, "solve", QUESTION, "--json", *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout), done.stderr


def judged(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for step in answer["steps"] if step["decision"] is not None]


def test_solve_streams_steps_judged_by_the_drafts_own_logprobs(vllm_generator: Server) -> None:
    answer, _ = solve(*remote(vllm_generator, "--reward", "draft-confidence", "--delta", "0.5"))
    assert answer["status"] == "ok" and answer["text"].strip()
    steps = judged(answer)
    assert steps and {s["reward_source"] for s in steps} == {"draft-confidence"}
    assert all(0.0 < s["decision"]["reward"] <= 1.0 for s in steps)  # from vLLM's token log-probabilities
    assert answer["cost"]["draft"]["prefill_tokens"] > 0 and answer["cost"]["draft"]["generated_tokens"] > 0


def test_target_logprob_reads_the_step_through_prompt_logprobs(vllm_generator: Server) -> None:
    answer, _ = solve(*remote(vllm_generator, "--reward", "target-logprob", "--delta", "0.99"))
    steps = judged(answer)
    assert steps and {s["reward_source"] for s in steps} == {"target-logprob"}
    assert all(0.0 < s["decision"]["reward"] < 1.0 for s in steps)
    assert any(s["author"] == "target" for s in answer["steps"])  # δ 0.99: the target rewrote steps
    assert answer["cost"]["target"]["prefill_tokens"] > 0


def test_qwen_prm_scores_each_step_through_pooling(vllm_generator: Server, vllm_prm: Server) -> None:
    prm = ["--reward", "qwen-prm", "--reward-url", vllm_prm.url, "--reward-model", vllm_prm.name]
    answer, _ = solve(*remote(vllm_generator, *prm))
    steps = judged(answer)
    assert steps and {s["reward_source"] for s in steps} == {"qwen-prm"}
    assert all(0.0 <= s["decision"]["reward"] <= 1.0 for s in steps)  # P(positive) at each <extra_0>
    assert answer["cost"]["reward"]["prefill_tokens"] > 0


def test_an_outcome_reward_model_scores_through_classify(vllm_generator: Server, vllm_orm: Server) -> None:
    orm = ["--reward", "orm", "--reward-url", vllm_orm.url, "--reward-model", vllm_orm.name, "--delta", "0"]
    answer, _ = solve(*remote(vllm_generator, *orm))
    steps = judged(answer)
    assert steps and {s["reward_source"] for s in steps} == {"orm"}
    assert all(isinstance(s["decision"]["reward"], float) for s in steps)  # unbounded scores


def test_a_dead_replica_beside_a_live_vllm_is_said_once_and_the_live_one_answers(
    vllm_generator: Server,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    urls = f"{dead},{vllm_generator.url}"
    answer, stderr = solve(*remote(vllm_generator, "--reward", "draft-confidence", draft_urls=urls))
    assert answer["status"] == "ok" and answer["cost"]["draft"]["generated_tokens"] > 0
    assert stderr.count(dead) == 1 and f"draft server {dead}: cannot connect" in stderr, stderr


def test_doctor_checks_the_vllm_servers(vllm_generator: Server) -> None:
    done = subprocess.run(
        [*RSDCHAT, "doctor", *remote(vllm_generator, "--reward", "draft-confidence")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(vllm_generator.url) == 2 and done.stdout.count("vllm server") == 2
    assert done.stdout.count("✓ log-probabilities") == 2 and "✗" not in done.stdout


def test_eval_runs_a_method_over_vllm(vllm_generator: Server, tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
            for i in range(2)
        )
    )
    out = tmp_path / "results.jsonl"
    args = ["eval", "--file", str(questions), "-m", "target-only,rsd", "-o", str(out), "--json"]
    done = subprocess.run(
        [*RSDCHAT, *args, *remote(vllm_generator, "--reward", "draft-confidence")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    methods = {m["method"]: m for m in json.loads(done.stdout)["methods"]}
    assert methods["target-only"]["questions"] == 2 and methods["rsd"]["questions"] == 2
