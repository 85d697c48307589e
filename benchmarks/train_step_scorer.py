"""Train the step scorer on labelled real draft steps; report every free signal's AUC on them.

    .venv/bin/python benchmarks/train_step_scorer.py benchmarks/data/gsm8k-train-steps.jsonl \\
        --out rsdchat/rewards/data/step-scorer.json

The labelled steps come from `benchmarks/step_labels.py` (real Qwen2.5-Coder-0.5B steps on
GSM8K train, `bad` where a step turned a prefix the target could finish into one it
cannot). The scorer is an L2-regularised logistic regression on the standardised
features of `rsdchat.rewards.features`, classes weighted to balance. Printed: each
feature's AUC alone (oriented so that 0.5 is chance and 1 is perfect), the AUC of the
free reward sources on the same steps, and the scorer's AUC out of fold (5 folds, a
problem's steps never split across folds). AUC here = the chance that a good step scores
higher than a bad one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rsdchat.core.types import Context, Generation, Message
from rsdchat.plugins import RewardContext
from rsdchat.prm.train import auc, fit_logistic
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat.rewards import make_reward
from rsdchat.rewards.features import FEATURES, step_features
from rsdchat.rewards.learned import ScorerModel

Array = npt.NDArray[np.float64]


def labelled_steps(path: Path) -> list[tuple[str, Context, Generation, int]]:
    """(problem id, context, step, 1 if bad else 0) for every step with a verdict."""
    steps = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        messages = (Message("system", MATH_SYSTEM_PROMPT), Message("user", record["question"]))
        response = ""
        for step, label in zip(record["draft"]["steps"], record["labels"], strict=True):
            generation = Generation(
                step["text"],
                step["finish_reason"],
                token_logprobs=tuple(step["token_logprobs"] or ()),
                token_texts=tuple(step["token_texts"] or ()),
                token_entropies=tuple(step["token_entropies"] or ()),
            )
            if label is not None:
                steps.append((record["id"], Context(messages, response), generation, int(label == "bad")))
            response += step["text"]
    return steps


def train(rows: list[dict[str, float]], y: list[int], names: list[str], l2: float) -> ScorerModel:
    x = np.array([[row[n] for n in names] for row in rows], dtype=float)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    weights, bias = fit_logistic((x - mean) / scale, np.array(y, dtype=float), l2)
    return ScorerModel(tuple(names), tuple(mean), tuple(scale), tuple(weights), bias)


def cross_validated_auc(
    ids: list[str], rows: list[dict[str, float]], y: list[int], names: list[str], l2: float, folds: int = 5
) -> float:
    problems = sorted(set(ids))
    random.Random(0).shuffle(problems)
    fold_of = {p: i % folds for i, p in enumerate(problems)}
    scores = [0.0] * len(rows)
    for fold in range(folds):
        train_at = [i for i, p in enumerate(ids) if fold_of[p] != fold]
        model = train([rows[i] for i in train_at], [y[i] for i in train_at], names, l2)
        for i, p in enumerate(ids):
            if fold_of[p] == fold:
                scores[i] = 1 - model.p_bad(rows[i])
    return auc(scores, y)


async def reward_scores(steps: list[tuple[str, Context, Generation, int]]) -> dict[str, list[float]]:
    """Each free reward source's reward of every step."""
    out = {}
    for name in ("draft-confidence", "arithmetic", "arithmetic*draft-confidence"):
        source = make_reward(name, RewardContext(None, None, {}))
        out[name] = [(await source.score(context, step)).reward for _, context, step, _ in steps]
    return out


async def target_scores(
    steps: list[tuple[str, Context, Generation, int]], model: str
) -> dict[str, list[float]]:
    """The target's own view of each step (costs one read per step); higher: the target agrees."""
    from rsdchat.core.types import Role
    from rsdchat_llamacpp import LlamaCppBackend, LlamaCppConfig

    backend = LlamaCppBackend(LlamaCppConfig())
    target = backend.generator(Role.TARGET, model)
    mean, low, math_low = [], [], []
    try:
        for _, context, step, _ in steps:
            scored = await target.logprobs(context, step.text)
            values = list(scored.token_logprobs) or [0.0]
            mean.append(math.fsum(values) / len(values))
            low.append(min(values))
            pieces = step.token_texts or ()
            mathy = [
                v for v, p in zip(values, pieces, strict=False) if any(c.isdigit() or c in "+-*/=" for c in p)
            ]
            math_low.append(min(mathy, default=0.0))
    finally:
        await backend.aclose()
    return {"target mean logprob": mean, "target min logprob": low,
            "target min logprob on number tokens": math_low}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("labels", type=Path)
    parser.add_argument("--out", type=Path, help="write the scorer here (JSON)")
    parser.add_argument("--l2", type=float, default=1.0)
    parser.add_argument("--features", default=",".join(FEATURES), help="comma-separated feature names")
    parser.add_argument("--default-delta", type=float, default=0.5, help="the δ the scorer ships with")
    parser.add_argument(
        "--target", help="also measure the target's log-probabilities of each step (a model name)"
    )
    args = parser.parse_args()
    steps = labelled_steps(args.labels)
    if not steps:
        sys.exit(f"no labelled steps in {args.labels}")
    ids = [pid for pid, *_ in steps]
    rows = [step_features(context, step) for _, context, step, _ in steps]
    y = [bad for *_, bad in steps]
    names = [n.strip() for n in args.features.split(",") if n.strip()]
    print(f"{len(steps)} labelled steps from {len(set(ids))} problems: {sum(y)} bad, {len(y) - sum(y)} good")
    print("\nfeature alone (AUC, oriented; sign: + if higher means fine)")
    for name in FEATURES:
        value = auc([row[name] for row in rows], y)
        print(f"  {name:22s} {max(value, 1 - value):.3f} {'+' if value >= 0.5 else '-'}")
    print("\nfree reward sources (AUC)")
    for name, scores in asyncio.run(reward_scores(steps)).items():
        print(f"  {name:30s} {auc(scores, y):.3f}")
    if args.target:
        print("\nthe target reading each step (AUC)")
        for name, scores in asyncio.run(target_scores(steps, args.target)).items():
            print(f"  {name:38s} {auc(scores, y):.3f}")
    cv = cross_validated_auc(ids, rows, y, names, args.l2)
    print(f"\ndraft-scorer, out of fold (5 folds by problem): AUC {cv:.3f}")
    model = train(rows, y, names, args.l2)
    for name, weight in sorted(zip(model.features, model.weights, strict=True), key=lambda t: -abs(t[1])):
        print(f"  {name:22s} {weight:+.3f}")
    if args.out is not None:
        about: dict[str, Any] = {
            "trained_on": str(args.labels),
            "problems": len(set(ids)),
            "steps": len(steps),
            "bad_steps": sum(y),
            "l2": args.l2,
            "cv_auc": round(cv, 4),
            "default_delta": args.default_delta,
            "command": " ".join(["benchmarks/train_step_scorer.py", *sys.argv[1:]]),
            "labels": "benchmarks/step_labels.py (Math-Shepherd-style, the target completes)",
        }
        model = ScorerModel(model.features, model.mean, model.scale, model.weights, model.bias, about)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(model.to_dict(), indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {args.out}")
    if math.isnan(cv):
        sys.exit("not enough labels of both kinds")


if __name__ == "__main__":
    main()
