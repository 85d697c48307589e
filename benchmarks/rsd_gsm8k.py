"""RSD vs target-only vs draft-only on GSM8K with the embedded llama.cpp models, in one run.

Every configuration answers the same problems with the same models (loaded once),
one question at a time, and the table prints ratios against target-only:

    .venv/bin/python benchmarks/rsd_gsm8k.py --limit 20
    .venv/bin/python benchmarks/rsd_gsm8k.py --limit 5 --configs target-only,rsd:draft-confidence
    .venv/bin/python benchmarks/rsd_gsm8k.py --configs target-only,rsd:draft-confidence@0.8  # δ = 0.8

Columns: accuracy (math-verify), wall time and FLOPs relative to target-only, draft
acceptance, prefill tokens per generated token, prefill tokens per newly seen token
(1.0 = every token read once), and the engine's own share of wall time (wall time
not spent inside a backend or reward call).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rsdchat.engine import Engine
from rsdchat.evaluation.data import Problem, load_problems
from rsdchat.evaluation.grading import is_correct
from rsdchat.plugins import RewardContext
from rsdchat.policy import Mode
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat.rewards import make_reward
from rsdchat.settings import Settings
from rsdchat.trace import Step, Trace
from rsdchat.types import Context, Message, Role
from rsdchat_llamacpp import LlamaCppBackend, LlamaCppConfig, LlamaModel

DEFAULT_CONFIGS = (
    "target-only,draft-only,rsd:draft-confidence,rsd:arithmetic*draft-confidence,"
    "rsd:arithmetic,rsd:target-logprob,rsd:judge"
)


@dataclass
class Row:
    config: str
    correct: int = 0
    problems: int = 0
    wall: float = 0.0
    backend: float = 0.0
    flops: float = 0.0
    drafts: int = 0
    accepted: int = 0
    prefill: int = 0
    generated: int = 0
    newly_seen: int = 0
    per_problem: list[dict[str, object]] = field(default_factory=list)


def newly_seen(trace: Trace, prompt: dict[Role, int], reward_reads_target: bool) -> int:
    """Tokens a perfect cache must read: each model reads the prompt once, then the text
    the other model wrote before this model's last call (and, when the reward is the
    target, every draft step it scores)."""

    def scored_by_target(step: Step) -> bool:
        return reward_reads_target and step.author is Role.DRAFT and step.reward is not None

    def reads(model: Role, step: Step) -> bool:
        """Whether `model` must read this step's tokens as new input."""
        if model is Role.TARGET and scored_by_target(step):
            return True
        return step.author is not model and step.accepted

    total = 0
    for model in (Role.DRAFT, Role.TARGET):
        calls = [
            i
            for i, step in enumerate(trace.steps)
            if step.author is model or (model is Role.TARGET and scored_by_target(step))
        ]
        if calls:
            total += prompt[model] + sum(s.tokens for s in trace.steps[: calls[-1] + 1] if reads(model, s))
    return total


async def run_config(
    name: str,
    draft: LlamaModel,
    target: LlamaModel,
    settings: Settings,
    problems: list[Problem],
    console: Console,
) -> Row:
    mode_name, _, reward_spec = name.partition(":")
    reward_name, _, delta = reward_spec.partition("@")  # rsd:draft-confidence@0.8 sets δ
    mode = Mode(mode_name)
    reward = make_reward(reward_name, RewardContext(draft, target, {})) if mode is Mode.RSD else None
    update = {"mode": mode, **({"delta": float(delta)} if delta else {})}
    policy = settings.replace(**update).policy(reward)
    engine = Engine(draft=draft, target=target)
    reads_target = reward is not None and reward.n_params == target.info.n_params
    row = Row(name if reward is None else f"{name} ({policy.weighting.describe()})")
    for problem in problems:
        messages = [Message("system", MATH_SYSTEM_PROMPT), Message("user", problem.question)]
        prompt = {Role.DRAFT: draft.count_tokens(Context(tuple(messages)))}
        prompt[Role.TARGET] = target.count_tokens(Context(tuple(messages)))
        started = time.perf_counter()
        trace = await engine.solve(messages, policy, request_id=problem.id, seed=settings.seed)
        wall = time.perf_counter() - started
        ok = is_correct(trace.text, problem.reference)
        row.problems += 1
        row.correct += ok
        row.wall += wall
        row.backend += trace.ledger.backend_seconds
        row.flops += trace.ledger.flops
        row.drafts += trace.acceptance.judged
        row.accepted += trace.acceptance.accepted
        for usage in trace.ledger.usage.values():
            row.prefill += usage.prefill_tokens
            row.generated += usage.generated_tokens
        row.newly_seen += newly_seen(trace, prompt, reads_target)
        row.per_problem.append(
            {
                "id": problem.id,
                "correct": ok,
                "seconds": round(wall, 3),
                "finish": trace.finish_reason,
                "flops": trace.ledger.flops,
                "drafts": trace.acceptance.judged,
                "accepted": trace.acceptance.accepted,
            }
        )
        console.print(
            f"  {name:40s} {problem.id:10s} {'✓' if ok else '✗'} {wall:6.1f}s {trace.finish_reason}",
            highlight=False,
        )
    return row


def report(rows: list[Row], console: Console) -> None:
    base = next((r for r in rows if r.config == "target-only"), rows[0])
    table = Table(title="RSD on GSM8K (ratios against target-only, same run)", header_style="bold")
    for column in (
        "config",
        "accuracy",
        "wall ×",
        "FLOPs ×",
        "accepted",
        "prefill/gen",
        "prefill/new",
        "engine %",
    ):
        table.add_column(column, justify="left" if column == "config" else "right")
    for row in rows:
        table.add_row(
            row.config,
            f"{row.correct}/{row.problems}",
            f"{row.wall / base.wall:.2f}",
            f"{row.flops / base.flops:.2f}",
            f"{row.accepted / row.drafts:.0%}" if row.drafts else "—",
            f"{row.prefill / max(row.generated, 1):.2f}",
            f"{row.prefill / max(row.newly_seen, 1):.2f}",
            f"{100 * max(0.0, row.wall - row.backend) / row.wall:.2f}",
        )
    console.print(table)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="gsm8k")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    settings = Settings(max_tokens=args.max_tokens)
    console = Console(stderr=True)
    problems = load_problems(args.dataset, start=args.start, limit=args.limit)
    backend = LlamaCppBackend(LlamaCppConfig())
    draft = backend.generator(Role.DRAFT, settings.draft)
    target = backend.generator(Role.TARGET, settings.target)
    rows = []
    for name in args.configs.split(","):
        rows.append(await run_config(name.strip(), draft, target, settings, problems, console))
        if args.out:  # keep what finished if a later config is interrupted
            args.out.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    await backend.aclose()
    report(rows, Console(width=160))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
