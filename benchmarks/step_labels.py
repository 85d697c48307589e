"""Real draft steps on GSM8K *train*, labelled by what the target can still do after them.

The draft (Qwen2.5-Coder-0.5B) answers each problem alone, greedily. Its steps are then
labelled automatically (Math-Shepherd-style "hard estimation", with the target as the
completer), so a reward can be judged on the draft's real mistakes:

1. The draft's final answer is right: every step is `good`.
2. Otherwise the target (Qwen2.5-Coder-1.5B) answers from scratch. If it is wrong too,
   the problem gives no verdict (every label `null`): neither model can solve it.
3. Otherwise the target continues, greedily, from the draft's first k steps. With
   c(k) = "that continuation reaches the gold answer", c(0) = 1 and c(n) = 0; a binary
   search finds k with c(k-1) = 1 and c(k) = 0. Step k is `bad` (it turned a prefix
   the target could finish into one it cannot), the steps before it `good`, the steps
   after it `null` (they continue an already broken answer).

Results are appended to a JSONL file, one problem per line, flushed as they finish;
rerunning the same command resumes where it stopped:

    .venv/bin/python benchmarks/step_labels.py --limit 300 --out benchmarks/data/gsm8k-train-steps.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from rsdchat.core.engine import Engine
from rsdchat.core.policy import Mode
from rsdchat.core.trace import Trace
from rsdchat.core.types import Message, Role
from rsdchat.evaluation.data import load_problems
from rsdchat.evaluation.grading import extract_answer, is_correct
from rsdchat.in_force import in_force
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat.settings import Settings
from rsdchat_llamacpp import LlamaCppBackend, LlamaCppConfig

PROCEDURE = "math-shepherd-binary-v1"


def _steps(trace: Trace) -> list[dict[str, Any]]:
    return [
        {
            "text": step.text,
            "tokens": step.tokens,
            "finish_reason": step.finish_reason,
            "token_logprobs": step.generation.token_logprobs,
            "token_texts": step.generation.token_texts,
            "token_entropies": step.generation.token_entropies,
        }
        for step in trace.answer_steps
    ]


async def label(problem: Any, engine: Engine, settings: Settings) -> dict[str, Any]:
    messages = [Message("system", MATH_SYSTEM_PROMPT), Message("user", problem.question)]
    draft, target = (
        in_force(settings.replace(mode=Mode.DRAFT_ONLY), None).policy,
        in_force(settings.replace(mode=Mode.TARGET_ONLY), None).policy,
    )
    started = time.perf_counter()
    solved = await engine.solve(messages, draft, request_id=problem.id, seed=settings.seed)
    steps = _steps(solved)
    record: dict[str, Any] = {
        "id": problem.id,
        "question": problem.question,
        "reference": problem.reference,
        "procedure": PROCEDURE,
        "draft": {
            "answer": extract_answer(solved.text),
            "correct": is_correct(solved.text, problem.reference),
            "finish_reason": solved.finish_reason,
            "steps": steps,
        },
        "continuations": {},
    }
    n = len(steps)
    if record["draft"]["correct"]:
        record["labels"] = ["good"] * n
    else:
        continued: dict[int, bool] = {}

        async def completes(k: int) -> bool:
            prefix = "".join(step["text"] for step in steps[:k])
            trace = await engine.solve(messages, target, request_id=f"{problem.id}@{k}", prefix=prefix)
            ok = is_correct(prefix + trace.text, problem.reference)
            record["continuations"][str(k)] = {
                "correct": ok,
                "answer": extract_answer(prefix + trace.text),
                "text": trace.text,
                "tokens": trace.ledger.cost(Role.TARGET).generated_tokens,
            }
            continued[k] = ok
            return ok

        if n == 0 or not await completes(0):
            record["labels"] = [None] * n
        else:
            good, bad = 0, n  # c(good) = 1, c(bad) = 0
            while bad - good > 1:
                middle = (good + bad) // 2
                if await completes(middle):
                    good = middle
                else:
                    bad = middle
            record["labels"] = ["good"] * (bad - 1) + ["bad"] + [None] * (n - bad)
    record["seconds"] = round(time.perf_counter() - started, 2)
    return record


def done_ids(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    ids = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            ids.add(json.loads(line)["id"])
        except (ValueError, KeyError):
            continue  # a line cut short by a kill: that problem runs again
    return ids


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    settings = Settings(max_tokens=args.max_tokens)
    problems = load_problems("gsm8k-train", start=args.start, limit=args.limit)
    done = done_ids(args.out)
    backend = LlamaCppBackend(LlamaCppConfig(threads=args.threads))
    engine = Engine(
        draft=backend.generator(Role.DRAFT, settings.draft),
        target=backend.generator(Role.TARGET, settings.target),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a", encoding="utf-8") as out:
        for problem in problems:
            if problem.id in done:
                continue
            record = await label(problem, engine, settings)
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
            labels = record["labels"]
            print(
                f"{problem.id}: draft {'✓' if record['draft']['correct'] else '✗'} "
                f"{labels.count('good')} good {labels.count('bad')} bad {labels.count(None)} none "
                f"{record['seconds']:.0f}s",
                flush=True,
            )
    await backend.aclose()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
