"""Run methods on questions and keep every result: what `rsdchat eval` does.

Methods run one after the other (so each one's wall time is its own), each on every
question that the results file does not hold yet, `concurrency` questions at a time.
A result reaches the file the moment it is known; a question whose backend failed is not
written (the run stops with one line, and the same command resumes it).
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rsdchat.core.engine import Engine
from rsdchat.core.errors import BackendError, ConfigError
from rsdchat.core.policy import Mode
from rsdchat.core.protocols import RewardSource, Speculates, StepGenerator
from rsdchat.core.trace import Acceptance, Step
from rsdchat.core.types import Role
from rsdchat.evaluation.cache import CachedGenerator, CachedReward, cached, new_pipeline
from rsdchat.evaluation.catalog import build_method
from rsdchat.evaluation.data import Problem
from rsdchat.evaluation.grading import extract_answer, extract_choice, grade
from rsdchat.evaluation.methods import Method, MethodSpec, Outcome, RandomRouting
from rsdchat.evaluation.results import ResultsFile
from rsdchat.files import Record
from rsdchat.runtime import Runtime
from rsdchat.settings import Settings, output_settings

Progress = Callable[
    [str, Record | None, int, int], None
]  # method, the new record (None: started), done, total


def fingerprint(settings: Settings, dataset: str, *, defaults: bool = False) -> dict[str, Any]:
    """What must be the same for two runs to share a results file (with `defaults`: its default values)."""
    return {"dataset": dataset, **output_settings(settings, defaults=defaults)}


def question_seed(settings: Settings, problem: Problem) -> int:
    """A seed per question that does not depend on where the question sits in the slice."""
    return (settings.seed * 1_000_003 + zlib.crc32(problem.id.encode("utf-8"))) % (2**31)


def needed_mode(specs: Sequence[MethodSpec]) -> Mode:
    """Which models the methods need: both, or only one of them."""
    draft = any(spec.name != "target-only" for spec in specs)
    target = any(spec.name not in ("draft-only", "maj", "bon", "pbon", "beam") for spec in specs)
    return Mode.RSD if draft and target else Mode.DRAFT_ONLY if draft else Mode.TARGET_ONLY


@dataclass
class RunTools:
    """The engine (behind a step cache when sweeping), reward sources by name, speculation."""

    runtime: Runtime
    cache: bool = False
    engine: Engine = field(init=False)
    _rewards: dict[str, RewardSource] = field(default_factory=dict)

    def __post_init__(self) -> None:
        engine = self.runtime.engine
        if self.cache:
            self.engine = Engine(
                draft=cached(engine.draft) if engine.draft is not None else None,
                target=cached(engine.target) if engine.target is not None else None,
            )
        else:
            self.engine = engine

    async def reward(self, spec: str) -> RewardSource:
        if spec not in self._rewards:
            source = await self.runtime.make_reward(spec)
            self._rewards[spec] = CachedReward(source) if self.cache else source
        return self._rewards[spec]

    def speculative(self, lookahead: int) -> StepGenerator:
        engine = self.runtime.engine
        if not isinstance(engine.target, Speculates) or engine.draft is None:
            backend = self.runtime.settings.backend_for(Role.TARGET)
            raise ConfigError(
                f"method sd: the {backend} backend does not do token-level speculative decoding here; "
                "on vLLM, start the target server with --speculative-config and run target-only"
            )
        return engine.target.speculative(engine.draft, lookahead)

    def cache_hits(self) -> tuple[int, int]:
        """(hits, lookups) of the step cache, models and rewards together."""
        caches = [m for m in (self.engine.draft, self.engine.target) if isinstance(m, CachedGenerator)]
        stats = [c.stats for c in caches] + [
            r.stats for r in self._rewards.values() if isinstance(r, CachedReward)
        ]
        return sum(s.hits for s in stats), sum(s.hits + s.misses for s in stats)

    async def aclose(self) -> None:
        for reward in self._rewards.values():
            await reward.aclose()


def make_record(problem: Problem, spec: MethodSpec, outcome: Outcome, seconds: float, cached: bool) -> Record:
    """One line of the results file."""
    trace = outcome.trace
    steps = trace.answer_steps if trace is not None else []
    answer = (
        extract_choice(outcome.text, len(problem.choices))
        if problem.choices
        else extract_answer(outcome.text)
    )
    acceptance = trace.acceptance if trace is not None else Acceptance()
    return {
        "id": problem.id,
        "question_key": problem.key,
        "method": spec.text,
        "correct": grade(outcome.text, problem.reference, len(problem.choices)),
        "answer": answer,
        "reference": problem.reference,
        "level": problem.level,
        "finish_reason": outcome.finish_reason,
        "error": outcome.error,
        "seconds": round(outcome.ledger.backend_seconds if cached else seconds, 4),
        "seconds_measured": round(seconds, 4),
        "cost": outcome.ledger.to_dict(),
        "acceptance": {
            "judged": acceptance.judged,
            "accepted": acceptance.accepted,
            "invalid": acceptance.invalid,
            "decided_by": deciders(trace.steps) if trace is not None else {},
        },
        "answer_tokens": sum(step.tokens for step in steps),
        "target_tokens": sum(step.tokens for step in steps if step.author is Role.TARGET),
        "target_steps": sum(step.author is Role.TARGET for step in steps),
        "steps": len(steps),
        "text": outcome.text,
        "trace": trace.to_dict() if trace is not None else None,
        "samples": outcome.samples,
    }


def deciders(steps: Sequence[Step]) -> dict[str, int]:
    """How many judged steps each reward (or cascade stage) decided."""
    counts: dict[str, int] = {}
    for step in steps:
        if step.decision is not None:
            name = step.reward_source or "?"
            counts[name] = counts.get(name, 0) + 1
    return counts


def matched_p(records: Sequence[Record], method: str, ids: set[str]) -> float | None:
    """The acceptance rate of `method` on the questions `ids` (None if it judged no step there)."""
    judged = accepted = 0
    for record in records:
        if record.get("method") == method and record.get("id") in ids:
            judged += int(record["acceptance"]["judged"])
            accepted += int(record["acceptance"]["accepted"])
    return accepted / judged if judged else None


async def run_methods(
    tools: RunTools,
    settings: Settings,
    problems: Sequence[Problem],
    specs: Sequence[MethodSpec],
    results: ResultsFile,
    progress: Progress,
) -> None:
    """Run every method on every question missing from `results`; BackendError stops the run."""
    done = results.done()
    ids = {problem.id for problem in problems}
    for spec in specs:
        method = build_method(spec, settings)
        if isinstance(method, RandomRouting) and "p" not in spec.options:
            rsd = next((s.text for s in specs if s.name == "rsd"), None)
            method.p = matched_p(results.records, rsd, ids) if rsd is not None else None
        todo = [p for p in problems if (p.id, spec.text) not in done]
        progress(spec.text, None, len(problems) - len(todo), len(problems))
        if not todo:
            continue
        await method.prepare(tools)
        await _run_one_method(method, tools, settings, todo, results, progress, len(problems))


async def _run_one_method(
    method: Method,
    tools: RunTools,
    settings: Settings,
    todo: Sequence[Problem],
    results: ResultsFile,
    progress: Progress,
    total: int,
) -> None:
    slots = asyncio.Semaphore(settings.concurrency)
    finished = total - len(todo)
    failure: list[str] = []

    async def one(problem: Problem) -> None:
        nonlocal finished
        async with slots:
            if failure:
                return
            hits_before = tools.cache_hits()[0]
            new_pipeline()
            started = time.perf_counter()
            outcome = await method.run(problem, tools, question_seed(settings, problem))
            seconds = time.perf_counter() - started
        if outcome.error is not None:
            failure.append(f"question {problem.id}, method {method.spec.text}: {outcome.error}")
            return
        record = make_record(problem, method.spec, outcome, seconds, tools.cache_hits()[0] > hits_before)
        results.add_result(record)
        finished += 1
        progress(method.spec.text, record, finished, total)

    tasks = [asyncio.create_task(one(problem)) for problem in todo]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    if failure:
        raise BackendError(
            f"{failure[0]} — {len(results.records)} results are kept in {results.path}; "
            "the same command resumes the rest"
        )
