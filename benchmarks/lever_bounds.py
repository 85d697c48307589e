"""What two untried levers could save at most, read from the traces of a finished eval run.

    .venv/bin/python benchmarks/lever_bounds.py benchmarks/results/gsm8k-test.jsonl [--method rsd]

- **Early exit of a doomed draft step**: a reward that could reject a draft step after its
  first token would save the draft's generation of every rejected step. The bound is that
  generation's share of the method's FLOPs (2 × the draft's parameters × the rejected tokens)
  and of its model seconds (the rejected steps' own seconds).
- **The target keeping the pen after a rejection** (`--keep-pen`) pays only if rejections come
  in runs: it prints how often the judged step after a rejected one was rejected too, against
  the steps after an accepted one.

The draft's parameter count is read from the ledger (FLOPs / 2 / tokens), so the numbers are
the same ones `rsdchat eval` reports.
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Tally:
    questions: int = 0
    flops: float = 0.0
    seconds: float = 0.0
    rejected_tokens: int = 0
    rejected_flops: float = 0.0
    rejected_seconds: float = 0.0
    after_rejected: list[bool] = field(default_factory=list)  # was the next judged step accepted?
    after_accepted: list[bool] = field(default_factory=list)

    def add(self, record: dict[str, Any]) -> None:
        cost, trace = record["cost"], record["trace"]
        draft = cost["draft"]
        tokens = draft["prefill_tokens"] + draft["generated_tokens"]
        per_token = draft["flops"] / tokens if tokens else 0.0  # 2 × parameters
        self.questions += 1
        self.flops += cost["total_flops"]
        self.seconds += record["seconds"]
        judged = []
        for step in trace["steps"]:
            if step["author"] != "draft" or step["decision"] is None:
                continue
            judged.append(step["accepted"])
            if not step["accepted"]:
                self.rejected_tokens += step["tokens"]
                self.rejected_flops += per_token * step["tokens"]
                self.rejected_seconds += step["seconds"]
        for before, after in itertools.pairwise(judged):
            (self.after_accepted if before else self.after_rejected).append(after)


def share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--method", default="rsd")
    args = parser.parse_args()
    tally = Tally()
    for line in args.results.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("type") == "result" and record["method"] == args.method and record.get("trace"):
            tally.add(record)
    if not tally.questions:
        raise SystemExit(f"{args.results}: no traced results of method {args.method!r}")
    rejected, accepted = tally.after_rejected, tally.after_accepted
    print(f"{args.results} · method {args.method} · {tally.questions} questions")
    print(
        f"early exit, at most: {tally.rejected_tokens} rejected draft tokens = "
        f"{share(tally.rejected_flops, tally.flops)} of the FLOPs, "
        f"{share(tally.rejected_seconds, tally.seconds)} of the model seconds"
    )
    print(
        f"rejections in runs: after a rejected step {share(rejected.count(False), len(rejected))} of "
        f"{len(rejected)} judged steps were rejected; after an accepted one "
        f"{share(accepted.count(False), len(accepted))} of {len(accepted)}"
    )


if __name__ == "__main__":
    main()
