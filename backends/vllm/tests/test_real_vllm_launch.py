"""`--backend vllm` with vLLM itself (its CPU build): rsdchat starts `vllm serve` for the draft, the
target and a process reward model, answers, and leaves no process behind; a model vLLM cannot load
ends with one line naming the role and the server's log."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from real_vllm import VLLM, checkpoint
from vllm_processes import STARTED, Streaming, wait_gone

RSDCHAT = [sys.executable, "-c", "from rsdchat.cli import main; main()"]
QUESTION = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell altogether?"


def launched(*more: str) -> list[str]:
    model = str(checkpoint("smollm2"))
    return [
        "--backend", "vllm", "--vllm-command", str(VLLM), "--draft", model, "--target", model,
        "--max-model-len", "2048", "--max-steps", "3", "--max-step-tokens", "32", *more,
    ]  # fmt: skip


def started_pids(stderr: str) -> dict[str, int]:
    return {role: int(pid) for role, pid, _ in STARTED.findall(stderr)}


def test_solve_launches_draft_target_and_a_qwen_prm_on_vllm_and_stops_them(
    state: Path, reaper: list[int]
) -> None:
    prm = ["--reward", "vllm-qwen-prm", "--reward-model", str(checkpoint("qwen-prm"))]
    done = subprocess.run(
        [*RSDCHAT, "solve", QUESTION, "--json", *launched(*prm)], capture_output=True, text=True, timeout=900
    )
    pids = started_pids(done.stderr)
    reaper += list(pids.values())
    assert done.returncode == 0, done.stderr
    assert sorted(pids) == ["draft", "reward", "target"], done.stderr
    answer = json.loads(done.stdout)
    judged = [step for step in answer["steps"] if step["decision"] is not None]
    assert judged and {step["reward_source"] for step in judged} == {"vllm-qwen-prm"}
    assert answer["cost"]["reward"]["prefill_tokens"] > 0
    assert answer["cost"]["draft"]["flops"] is not None  # sized from the launched checkpoint
    assert wait_gone(list(pids.values()), timeout=30) == []


def test_a_model_vllm_cannot_load_is_one_line_naming_the_role_and_its_log(
    state: Path, reaper: list[int], tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(
        '{"architectures": ["NoSuchModelForCausalLM"], "model_type": "nosuch"}'
    )
    args = launched()
    args[args.index("--draft") + 1] = str(broken)
    done = subprocess.run([*RSDCHAT, "solve", QUESTION, *args], capture_output=True, text=True, timeout=900)
    reaper += list(started_pids(done.stderr).values())
    assert done.returncode != 0 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("rsdchat:")]
    assert len(errors) == 1, done.stderr
    assert "draft" in errors[0] and re.search(r"\S+\.log", errors[0]), errors[0]
    assert wait_gone(list(started_pids(done.stderr).values()), timeout=30) == []


@pytest.mark.parametrize("how", ["kill -TERM", "kill -9"])
def test_stopping_rsdchat_mid_answer_stops_every_vllm_process(
    how: str, state: Path, reaper: list[int]
) -> None:
    run = Streaming(
        [*RSDCHAT, "solve", QUESTION, *launched("--reward", "draft-confidence", "--max-steps", "40")]
    )
    try:
        assert run.wait(600), run.text
        pids = started_pids(run.text)
        reaper += list(pids.values())
        if how == "kill -TERM":
            run.process.send_signal(signal.SIGTERM)
        else:  # no handler of rsdchat's runs: the servers' guards see their lifeline close
            run.process.kill()
        assert run.process.wait(120) == (-signal.SIGKILL if how == "kill -9" else 130)
    finally:
        run.finish()
    assert sorted(pids) == ["draft", "target"] and "answer:" not in run.text
    assert wait_gone(list(pids.values()), timeout=60) == []  # each server's group: its engine core too
