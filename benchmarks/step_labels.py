"""Real draft steps labelled by what the target can still do after them (`rsdchat.prm.labels`).

`rsdchat train-prm` labels and trains in one go; this script only labels, for the studies
in benchmarks/ (the AUC of every reward on real mistakes, the oracle bound):

    .venv/bin/python benchmarks/step_labels.py --limit 300 --out benchmarks/data/gsm8k-train-steps.jsonl
    .venv/bin/python benchmarks/step_labels.py --dataset gsm8k --ids gsm8k-3,gsm8k-7 --out FILE

Rerunning the same command resumes where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from rsdchat.core.policy import Mode
from rsdchat.evaluation.data import load_problems
from rsdchat.in_force import in_force
from rsdchat.prm import labels
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat.runtime import open_runtime
from rsdchat.settings import Settings


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="gsm8k-train")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--ids", help="only these question ids, comma-separated")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    settings = Settings(max_tokens=args.max_tokens)
    if args.ids:
        wanted = args.ids.split(",")
        known = {p.id: p for p in load_problems(args.dataset)}
        problems = [known[i] for i in wanted]
    else:
        problems = load_problems(args.dataset, start=args.start, limit=args.limit)
    runtime = await open_runtime(settings, Mode.RSD, with_reward=False)
    draft = in_force(settings.replace(mode=Mode.DRAFT_ONLY), None).policy
    target = in_force(settings.replace(mode=Mode.TARGET_ONLY), None).policy
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for problem in labels.todo(problems, args.out):
            record = await labels.label(
                problem, runtime.engine, draft, target, MATH_SYSTEM_PROMPT, seed=settings.seed
            )
            labels.append(args.out, record)
            tally = labels.counts([record])
            print(
                f"{problem.id}: draft {'✓' if record['draft']['correct'] else '✗'} "
                f"{tally['good']} good {tally['bad']} bad {tally['none']} none {record['seconds']:.0f}s",
                flush=True,
            )
    finally:
        await runtime.aclose()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
