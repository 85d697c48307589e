"""How far can any reward go on the labelled draft steps? An audit of the labels, read by hand.

    .venv/bin/python benchmarks/label_audit.py --target qwen2.5-coder-1.5b --draft-prm

The step labels (benchmarks/data/gsm8k-train-steps.jsonl, Math-Shepherd-style: `bad` where
one greedy completion by the target reached the gold answer before the step and not after
it) are what `rsdchat train-prm` learns from and what every AUC in docs/rewards.md is
measured on. Each label rests on one completion, so some say `bad` of a right step (the
target went astray after it) and some say `good` of a wrong one (the target mended it).

Two hand audits say how often (a person read each step against its question):
- benchmarks/data/gsm8k-train-bad-audit.jsonl: every `bad` step; `error` is whether the
  step itself holds a mistake (a wrong number, a misread quantity, a wrong plan);
- benchmarks/data/gsm8k-train-good-audit.jsonl: 40 `good` steps drawn at random (seed 0).

Printed: the two error rates (Wilson 95% intervals), the AUC a *perfect* judge of mistakes
would reach on these labels (it ranks every step with a mistake below every step without
one, ties halved), and each reward's AUC on all labels and on the audited ones alone (a
`bad` step with a mistake against the `good` steps).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from train_step_scorer import labelled_steps, reward_scores, target_scores

from rsdchat.prm.head import PrmHead
from rsdchat.prm.train import auc
from rsdchat.rewards.features import step_features

DATA = Path("benchmarks/data")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion k/n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def perfect_judge_auc(bad_with_error: float, good_with_error: float) -> float:
    """AUC on the labels of a judge scoring 0 a step with a mistake and 1 any other (ties ½)."""
    a, g = bad_with_error, good_with_error
    return (1 - g) * (a + (1 - a) / 2) + g * a / 2


def audit(path: Path) -> dict[tuple[str, int], dict[str, object]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {(row["id"], row["step"]): row for row in rows}


async def tag_states(path: Path) -> Any:
    """The draft's hidden state at the step tag after each labelled step, in `labelled_steps` order:
    what draft-prm reads, read as `rsdchat train-prm` reads it (in process)."""
    from rich.console import Console

    from rsdchat.cli.train_prm import read_all
    from rsdchat.core.types import Role
    from rsdchat.prm.labels import read_labels
    from rsdchat_llamacpp import LlamaCppBackend, LlamaCppConfig

    backend = LlamaCppBackend(LlamaCppConfig())
    draft = backend.generator(Role.DRAFT, "qwen2.5-coder-0.5b")
    try:
        states, _, _ = await read_all(draft, read_labels(path), Console(stderr=True))
    finally:
        await backend.aclose()
    return states.astype("float64")


def out_of_fold_head(states: Any, steps: list) -> list[float]:  # type: ignore[type-arg]
    """draft-prm out of fold: the head `rsdchat train-prm` fits on these labels, each step scored by
    a head fitted without its question (the shipped head was trained on these very steps)."""
    import numpy as np

    from rsdchat.prm.train import train_head

    good = np.array([1.0 - bad for *_, bad in steps])
    return [float(p) for p in train_head(states, good, [pid for pid, *_ in steps], {}).oof]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--labels", type=Path, default=DATA / "gsm8k-train-steps.jsonl")
    parser.add_argument("--target", help="also the target's log-probabilities of each step (a model name)")
    parser.add_argument(
        "--draft-prm", action="store_true", help="also draft-prm out of fold (the draft in process)"
    )
    parser.add_argument(
        "--prm-head", type=Path, action="append", help="also this head (trained on other questions)"
    )
    args = parser.parse_args()
    bad_audit = audit(DATA / "gsm8k-train-bad-audit.jsonl")
    good_audit = audit(DATA / "gsm8k-train-good-audit.jsonl")
    steps = labelled_steps(args.labels)
    numbers = _step_numbers(args.labels)
    y = [bad for *_, bad in steps]
    n_bad = sum(y)
    bad_err = sum(bool(row["error"]) for row in bad_audit.values())
    good_err = sum(bool(row["error"]) for row in good_audit.values())
    if len(bad_audit) != n_bad:
        sys.exit(f"the bad-step audit covers {len(bad_audit)} steps; the labels have {n_bad}")
    print(f"{len(steps)} labelled steps from {len({pid for pid, *_ in steps})} questions: {n_bad} bad, "
          f"{len(steps) - n_bad} good")  # fmt: skip
    low, high = wilson(bad_err, n_bad)
    print(f"bad steps with a mistake in the step: {bad_err}/{n_bad} = {bad_err / n_bad:.0%} "
          f"(95%: {low:.0%}–{high:.0%})")  # fmt: skip
    glow, ghigh = wilson(good_err, len(good_audit))
    print(f"good steps with a mistake (random {len(good_audit)}): {good_err}/{len(good_audit)} = "
          f"{good_err / len(good_audit):.1%} (95%: {glow:.0%}–{ghigh:.0%})")  # fmt: skip
    a, g = bad_err / n_bad, good_err / len(good_audit)
    lowest, highest = perfect_judge_auc(low, ghigh), perfect_judge_auc(high, glow)
    print(f"\na perfect judge of mistakes on these labels: AUC {perfect_judge_auc(a, g):.3f} "
          f"(over the two intervals: {lowest:.3f}–{highest:.3f})")  # fmt: skip

    scores: dict[str, list[float]] = {
        "min token logprob (draft)": [step_features(c, s)["min_logprob"] for _, c, s, _ in steps]
    }
    scores.update(asyncio.run(reward_scores(steps)))
    if args.draft_prm or args.prm_head:
        states = asyncio.run(tag_states(args.labels))
        if args.draft_prm:
            scores["draft-prm, out of fold"] = out_of_fold_head(states, steps)
        for path in args.prm_head or ():
            head = PrmHead.load(path)
            scores[f"{path.parent.name}/{path.name}"] = [head.p_good(row) for row in states]
    if args.target:
        scores.update(asyncio.run(target_scores(steps, args.target)))
    # the audited labels: a bad step with a mistake against every good step
    clean = [i for i, (pid, *_rest, bad) in enumerate(steps)
             if not bad or bool(bad_audit[(pid, numbers[i])]["error"])]  # fmt: skip
    print(f"\nAUC on all {len(steps)} labels, and on the {len(clean)} audited ones "
          f"({sum(y[i] for i in clean)} bad steps with a mistake, {len(steps) - n_bad} good)")  # fmt: skip
    for name, values in scores.items():
        audited = auc([values[i] for i in clean], [y[i] for i in clean])
        print(f"  {name:38s} {auc(values, y):.3f}   {audited:.3f}")


def _step_numbers(path: Path) -> list[int]:
    """The step number (in its record) of each labelled step, in `labelled_steps` order."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        labels = json.loads(line)["labels"]
        out += [k for k, label in enumerate(labels) if label is not None]
    return out


if __name__ == "__main__":
    main()
