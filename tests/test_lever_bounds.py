"""benchmarks/lever_bounds.py reads the bounds it prints from the traces of an eval run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "lever_bounds.py"


def step(author: str, tokens: int, accepted: bool = True, seconds: float = 1.0) -> dict[str, object]:
    decision = {"accepted": accepted} if author == "draft" else None
    return dict(author=author, tokens=tokens, accepted=accepted, decision=decision, seconds=seconds)


def test_rejected_drafts_share_and_runs_of_rejections(tmp_path: Path) -> None:
    steps = [step("draft", 10), step("draft", 20, accepted=False), step("target", 30, seconds=3.0)]
    steps += [step("draft", 10, accepted=False), step("target", 10), step("draft", 10)]
    draft = {"prefill_tokens": 50, "generated_tokens": 50, "flops": 200.0}
    record = {
        "type": "result", "method": "rsd", "seconds": 10.0, "trace": {"steps": steps},
        "cost": {"draft": draft, "total_flops": 1000.0},
    }  # fmt: skip
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"type": "eval"}) + "\n" + json.dumps(record) + "\n")
    out = subprocess.run([sys.executable, SCRIPT, path], capture_output=True, text=True, check=True).stdout
    # 30 rejected tokens × 2 FLOPs each (200 FLOPs / 100 tokens) = 60 of 1000; 2 s of 10
    assert "30 rejected draft tokens = 6.0% of the FLOPs, 20.0% of the model seconds" in out
    # judged: accepted, rejected, rejected, accepted: after a rejection 1 of 2, after an acceptance 1 of 1
    assert "after a rejected step 50.0% of 2 judged steps were rejected" in out
    assert "after an accepted one 100.0% of 1" in out


def test_a_file_without_the_method_says_so(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"type": "eval"}) + "\n")
    run = subprocess.run([sys.executable, SCRIPT, path], capture_output=True, text=True)
    assert run.returncode == 1 and "no traced results of method 'rsd'" in run.stderr
