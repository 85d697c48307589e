"""The oracle bound on an evaluated slice: RSD with a perfect reward, on the questions `rsdchat eval` ran.

    .venv/bin/python benchmarks/oracle_slice.py benchmarks/results/gsm8k-test.jsonl \\
        benchmarks/data/gsm8k-test-0-99-oracle-labels.jsonl --ids gsm8k-0..gsm8k-99

For each question of the slice, from the eval results (measured) and the step labels of the
questions where the draft alone was wrong and the target alone right (`benchmarks/step_labels.py
--dataset gsm8k --ids …`, made for this bound only, never trained on):

- labelled with a first bad step k: the draft writes steps 1..k-1, the target reads that prefix
  and writes the rest (the labeller's continuation from k-1, which reached the gold answer);
- labelled, the draft right this time: the draft's answer; labelled, nothing reaches the gold
  answer: the draft's answer, counted wrong;
- not labelled (the draft alone right, or the target alone wrong): draft-only, as measured.

FLOPs are 2 × parameters × tokens with each role's parameters read off the eval records, so the
ratio to target-only is the one `rsdchat eval` prints.
"""

from __future__ import annotations

import argparse
import json
from functools import cache
from pathlib import Path
from typing import Any

from oracle_bound import prompt_tokens  # the same prompt layout and tokenizer

from rsdchat.evaluation.grading import is_correct


def params(records: list[dict[str, Any]], role: str) -> float:
    for record in records:
        cost = record["cost"][role]
        tokens = cost["prefill_tokens"] + cost["generated_tokens"]
        if tokens and cost["flops"]:
            return float(cost["flops"]) / (2 * float(tokens))
    raise SystemExit(f"no {role} cost in the eval results")


@cache
def vocabulary() -> Any:
    """The draft's tokenizer (the target shares it), for continuations the labels file did not count."""
    from llama_cpp import Llama

    from rsdchat_llamacpp.embedded import resolve_model
    from rsdchat_llamacpp.llamalog import hush

    hush()
    return Llama(model_path=str(resolve_model("qwen2.5-coder-0.5b", None)), vocab_only=True, verbose=False)


def continuation_tokens(continuation: dict[str, Any]) -> int:
    """The target's tokens for a continuation (counted again from its text where the file lacks them)."""
    if "tokens" in continuation:
        return int(continuation["tokens"])
    return len(vocabulary().tokenize(continuation["text"].encode(), add_bos=False, special=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("labels", type=Path)
    parser.add_argument("--ids", required=True, help="PREFIX-A..PREFIX-B: the slice")
    args = parser.parse_args()
    first, last = args.ids.split("..")
    prefix = first.rsplit("-", 1)[0]
    ids = [f"{prefix}-{i}" for i in range(int(first.rsplit("-", 1)[1]), int(last.rsplit("-", 1)[1]) + 1)]
    rows = [json.loads(line) for line in args.results.read_text().splitlines()]
    results = {(r["id"], r["method"]): r for r in rows if r.get("type") == "result"}
    labelled = {r["id"]: r for r in map(json.loads, args.labels.read_text().splitlines())}
    measured = [r for r in results.values() if r["id"] in ids]
    draft_p, target_p = params(measured, "draft"), params(measured, "target")
    prompts = dict(zip(labelled, prompt_tokens([r["question"] for r in labelled.values()]), strict=True))
    oracle_flops = target_flops = 0.0
    right = target_right = 0
    for pid in ids:
        target, draft = results[(pid, "target-only")], results[(pid, "draft-only")]
        target_flops += target["cost"]["total_flops"]
        target_right += bool(target["correct"])
        record = labelled.get(pid)
        if record is None:
            oracle_flops += draft["cost"]["total_flops"]
            right += bool(draft["correct"])
            continue
        prompt = prompts[pid]
        steps = [int(step["tokens"]) for step in record["draft"]["steps"]]
        if "bad" in record["labels"]:
            k = record["labels"].index("bad")
            continuation = record["continuations"][str(k)]
            prefix_tokens = sum(steps[:k])
            rest = continuation_tokens(continuation)
            oracle_flops += 2 * draft_p * (prompt + prefix_tokens) + 2 * target_p * (
                prompt + prefix_tokens + rest
            )
            done = "".join(s["text"] for s in record["draft"]["steps"][:k]) + continuation["text"]
            right += is_correct(done, record["reference"])
        else:
            oracle_flops += 2 * draft_p * (prompt + sum(steps))
            right += bool(record["draft"]["correct"])
    n = len(ids)
    print(f"{n} questions ({first}..{last}); {len(labelled)} labelled for the bound")
    print(f"  target-only   {target_right}/{n} right, FLOPs 1.00×")
    print(f"  oracle RSD    {right}/{n} right, FLOPs {oracle_flops / target_flops:.2f}× target-only")


if __name__ == "__main__":
    main()
