"""Would more completions per prefix mend the labels? Resample the target after each `bad` step.

    .venv/bin/python benchmarks/label_resample.py --samples 3 --out benchmarks/results/label-resample.jsonl

A step of benchmarks/data/gsm8k-train-steps.jsonl is `bad` because one greedy continuation by
the target from the draft's steps up to and including it missed the gold answer. Here the
target continues from that same prefix `--samples` more times, sampling (temperature
`--temperature`, seeds 1…N). If any reaches the answer, a label made from N + 1 completions
(Math-Shepherd's hard estimate: bad only if none reaches it) would not call the step bad.
Printed, by the hand audit's verdict (benchmarks/data/gsm8k-train-bad-audit.jsonl): how many
`bad` steps with a mistake, and without one, some sample rescues. A label procedure that
separates the two rescues the steps without a mistake and few of the others.

One JSON line per step, appended as it is done; rerunning resumes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from rsdchat.core.policy import Mode
from rsdchat.core.types import Message
from rsdchat.evaluation.grading import is_correct
from rsdchat.in_force import in_force
from rsdchat.prm import labels
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat.runtime import open_runtime
from rsdchat.settings import Settings

DATA = Path("benchmarks/data")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    records = {r["id"]: r for r in labels.read_labels(DATA / "gsm8k-train-steps.jsonl")}
    audit = [
        json.loads(line) for line in (DATA / "gsm8k-train-bad-audit.jsonl").read_text("utf-8").splitlines()
    ]
    done = {(r["id"], r["step"]) for r in resampled(args.out)}
    settings = Settings(max_tokens=args.max_tokens, temperature=args.temperature)
    runtime = await open_runtime(settings, Mode.TARGET_ONLY, with_reward=False)
    target = in_force(settings.replace(mode=Mode.TARGET_ONLY), None).policy
    try:
        for row in audit:
            if (row["id"], row["step"]) in done:
                continue
            record = records[row["id"]]
            system = record.get("system", MATH_SYSTEM_PROMPT)  # the labels were made with it
            messages = [Message("system", system), Message("user", record["question"])]
            prefix = "".join(step["text"] for step in record["draft"]["steps"][: row["step"] + 1])
            reached = []
            for seed in range(1, args.samples + 1):
                trace = await runtime.engine.solve(
                    messages, target, request_id=f"{row['id']}@{row['step']}#{seed}", prefix=prefix, seed=seed
                )
                reached.append(is_correct(prefix + trace.text, record["reference"]))
            labels.append(
                args.out, {"id": row["id"], "step": row["step"], "error": row["error"], "reached": reached}
            )
            print(f"{row['id']} step {row['step']} mistake={row['error']} reached={reached}", flush=True)
    finally:
        await runtime.aclose()
    rows = resampled(args.out)
    for verdict, name in ((True, "with a mistake"), (False, "without a mistake")):
        group = [r for r in rows if r["error"] is verdict]
        rescued = sum(any(r["reached"]) for r in group)
        samples = [ok for r in group for ok in r["reached"]]
        print(
            f"bad steps {name}: {rescued}/{len(group)} rescued by a sample; "
            f"{sum(samples)}/{len(samples)} samples reach the answer"
        )


def resampled(path: Path) -> list[dict[str, Any]]:
    """The steps done so far (a line cut short by a kill is skipped: that step runs again)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
