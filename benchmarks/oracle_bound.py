"""How cheap could RSD be here with a perfect reward? A bound from the labelled real steps.

    .venv/bin/python benchmarks/oracle_bound.py [benchmarks/data/gsm8k-train-steps.jsonl]

`benchmarks/step_labels.py` ran, for every GSM8K train problem the draft (Qwen2.5-Coder-0.5B)
gets wrong and the target (1.5B) gets right, the target greedily from the draft's prefixes
and found the first step after which the target can no longer finish correctly. That gives
an *oracle* RSD: the draft writes until its first bad step, the target reads that prefix and
writes the rest. Its FLOPs (2 × parameters × tokens read or written, the same count
`rsdchat eval` uses) against the target writing the whole answer alone:

- draft right: the draft's answer alone (nothing for the target to do);
- draft wrong, target right: draft prefix + the target reading it + the target's continuation;
- neither right: the draft's answer alone (an oracle would not pay for a wrong answer), which
  flatters the oracle.

The target-only answer length is measured where the labeller wrote one (problems the draft
got wrong); elsewhere it is estimated from the draft's length and the two models' mean length
ratio on the problems where both were measured. Prompts are tokenized by the draft's
tokenizer (the two share one). The oracle reaches the target's accuracy on these problems by
construction; any real reward is worse, so its cost is higher or its accuracy lower.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rsdchat.prompts import MATH_SYSTEM_PROMPT


def prompt_tokens(questions: list[str]) -> list[int]:
    """Tokens of the system prompt + question as the chat template lays them out."""
    from llama_cpp import Llama

    from rsdchat_llamacpp.embedded import resolve_model

    llm = Llama(model_path=str(resolve_model("qwen2.5-coder-0.5b", None)), vocab_only=True, verbose=False)
    counts = []
    for question in questions:
        text = f"<|im_start|>system\n{MATH_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
        counts.append(len(llm.tokenize((text + "<|im_start|>assistant\n").encode(), special=True)))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "labels", type=Path, nargs="?", default=Path("benchmarks/data/gsm8k-train-steps.jsonl")
    )
    parser.add_argument("--draft-params", type=float, default=494e6)
    parser.add_argument("--target-params", type=float, default=1544e6)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = [json.loads(line) for line in args.labels.read_text().splitlines()]
    prompts = prompt_tokens([r["question"] for r in rows])
    draft_p, target_p = args.draft_params, args.target_params

    def draft_len(row: dict[str, Any]) -> int:
        return sum(int(step["tokens"]) for step in row["draft"]["steps"])

    measured = [(r, draft_len(r)) for r in rows if "0" in r["continuations"]]
    ratio = sum(int(r["continuations"]["0"]["tokens"]) for r, _ in measured) / sum(n for _, n in measured)
    kinds = {
        "draft right": [0.0, 0.0, 0],
        "draft wrong, target right": [0.0, 0.0, 0],
        "neither": [0.0, 0.0, 0],
    }
    for row, prompt in zip(rows, prompts, strict=True):
        steps = [int(step["tokens"]) for step in row["draft"]["steps"]]
        target_alone = (
            int(row["continuations"]["0"]["tokens"]) if "0" in row["continuations"] else ratio * sum(steps)
        )
        target_only = target_p * (prompt + target_alone)
        if row["draft"]["correct"]:
            kind, oracle = "draft right", draft_p * (prompt + sum(steps))
        elif "bad" in row["labels"]:
            k = row["labels"].index("bad")
            prefix, rest = sum(steps[:k]), int(row["continuations"][str(k)]["tokens"])
            kind = "draft wrong, target right"
            oracle = draft_p * (prompt + prefix) + target_p * (prompt + prefix + rest)
        else:
            kind, oracle = "neither", draft_p * (prompt + sum(steps))
        cell = kinds[kind]
        cell[0], cell[1], cell[2] = cell[0] + oracle, cell[1] + target_only, cell[2] + 1
    print(f"{len(rows)} GSM8K train problems from {args.labels}; target/draft answer length {ratio:.2f}")
    for kind, (oracle, target, n) in kinds.items():
        print(f"  {kind:26s} {n:3d} problems: oracle RSD FLOPs {oracle / target:.2f}× target-only")
    oracle, target = sum(c[0] for c in kinds.values()), sum(c[1] for c in kinds.values())
    print(f"  {'all':26s} {len(rows):3d} problems: oracle RSD FLOPs {oracle / target:.2f}× target-only")


if __name__ == "__main__":
    main()
