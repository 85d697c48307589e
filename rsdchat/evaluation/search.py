"""The sampling baselines of the paper (§3), on the draft model with the run's reward source.

- `maj`: n whole answers, the most common final answer wins;
- `bon`: n whole answers, the one whose last step the reward scores highest;
- `pbon`: at each step n candidate steps, the best by reward is kept (process best-of-n);
- `beam`: n partial answers, each expanded n ways per step, the n best by reward kept.

All sample at temperature 0.7, top_p 0.8 (the paper's setting, overridable like any
setting: `maj:n=8:temperature=1.0`). Steps are written by the engine, one step at a time
for the step-level searches (`Engine.solve` with `max_steps=1` and the answer so far as
prefix), so their cost is measured like every other method's.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from rsdchat.core.answers import has_final_answer
from rsdchat.core.policy import Mode, Policy
from rsdchat.core.protocols import RewardSource
from rsdchat.core.trace import Ledger, Step, Trace
from rsdchat.core.types import Context, Message, Role
from rsdchat.evaluation.data import Problem
from rsdchat.evaluation.grading import answer_key, extract_answer
from rsdchat.evaluation.methods import Method, MethodSpec, Outcome, Tools
from rsdchat.in_force import in_force
from rsdchat.settings import Settings


class Sampled(Method):
    """What the sampling baselines share: n, the sampling policy and the reward source."""

    needs_reward = True
    n: int
    policy: Policy
    reward: RewardSource | None

    async def prepare(self, tools: Tools) -> None:
        self.n = self.spec.count("n", 4)
        self.policy = in_force(self.settings.replace(mode=Mode.DRAFT_ONLY), None).policy
        self.reward = await tools.reward(self.settings.reward) if self.needs_reward else None
        tools.engine.check(self.policy)

    async def samples(
        self, problem: Problem, tools: Tools, seeds: list[int], prefix: str = "", policy: Policy | None = None
    ) -> list[Trace]:
        """One answer per seed, `concurrency` of them in flight at a time: one at a time, a model
        that holds one sequence (llama.cpp) keeps each sample's context cached from step to step."""
        messages, slots = self.messages(problem), asyncio.Semaphore(self.settings.concurrency)

        async def sample(seed: int) -> Trace:
            async with slots:
                chosen, name = policy or self.policy, f"{problem.id}#{seed}"
                return await tools.engine.solve(messages, chosen, request_id=name, seed=seed, prefix=prefix)

        return list(await asyncio.gather(*(sample(seed) for seed in seeds)))

    async def score(self, messages: list[Message], before: str, step: Step, ledger: Ledger) -> float:
        """The reward of `step` after the reply `before`, charged to `ledger`."""
        assert self.reward is not None
        if not step.text.strip():
            return -math.inf
        scored = await self.reward.score(Context(tuple(messages), before), step.generation)
        ledger.add(Role.REWARD, scored.usage, self.reward.n_params)
        step.score, step.reward_source = scored.reward, self.reward.name
        return scored.reward if math.isfinite(scored.reward) else -math.inf


def _merged(traces: list[Trace]) -> Ledger:
    ledger = Ledger()
    for trace in traces:
        ledger.merge(trace.ledger)
    return ledger


class Majority(Sampled):
    needs_reward = False

    async def run(self, problem: Problem, tools: Tools, seed: int) -> Outcome:
        traces = await self.samples(problem, tools, [seed * 1000 + i for i in range(self.n)])
        answers = [extract_answer(trace.text) for trace in traces]
        keys = [answer_key(answer) if answer is not None else None for answer in answers]
        votes = Counter(key for key in keys if key is not None)
        winner = max(votes, key=lambda key: (votes[key], -keys.index(key))) if votes else None
        chosen = traces[keys.index(winner)] if winner is not None else traces[0]
        samples = [
            {"answer": a, "votes": votes.get(k, 0) if k else 0} for a, k in zip(answers, keys, strict=True)
        ]
        return _outcome(chosen, _merged(traces), traces, samples)


class BestOfN(Sampled):
    async def run(self, problem: Problem, tools: Tools, seed: int) -> Outcome:
        traces = await self.samples(problem, tools, [seed * 1000 + i for i in range(self.n)])
        ledger, messages, scores = _merged(traces), self.messages(problem), []
        for trace in traces:
            steps = [step for step in trace.answer_steps if step.text.strip()]
            before = "".join(step.text for step in trace.answer_steps[: len(trace.answer_steps) - 1])
            scores.append(await self.score(messages, before, steps[-1], ledger) if steps else -math.inf)
        best = max(range(len(traces)), key=lambda i: (scores[i], -i))
        samples = [
            {"answer": extract_answer(t.text), "score": s if math.isfinite(s) else None}
            for t, s in zip(traces, scores, strict=True)
        ]
        return _outcome(traces[best], ledger, traces, samples)


def _outcome(chosen: Trace, ledger: Ledger, traces: list[Trace], samples: list[dict[str, Any]]) -> Outcome:
    error = next((trace.error for trace in traces if trace.error), None)
    return Outcome(
        chosen.text, ledger, chosen.finish_reason if error is None else "error", error, chosen, samples
    )


@dataclass
class _Path:
    """A partial answer of a step-level search."""

    text: str = ""
    steps: list[Step] = field(default_factory=list)
    score: float = -math.inf
    done: bool = False

    @property
    def tokens(self) -> int:
        return sum(step.tokens for step in self.steps)


class StepSearch(Sampled):
    """pbon and beam: candidate steps from the draft, kept by the reward, step after step."""

    beams = 1  # partial answers kept

    async def run(self, problem: Problem, tools: Tools, seed: int) -> Outcome:
        settings, messages = self.settings, self.messages(problem)
        ledger, paths, finished, candidates = Ledger(), [_Path()], list[_Path](), 0
        for index in range(settings.max_steps):
            open_paths = [p for p in paths if not p.done and p.tokens < settings.max_tokens]
            if not open_paths:
                break
            expanded: list[_Path] = []
            for path_no, path in enumerate(open_paths):
                one = replace(self.policy, max_steps=1, max_tokens=settings.max_tokens - path.tokens)
                seeds = [seed * 100_000 + index * 1000 + path_no * self.n + i for i in range(self.n)]
                for trace in await self.samples(problem, tools, seeds, prefix=path.text, policy=one):
                    ledger.merge(trace.ledger)
                    candidates += 1
                    if not trace.steps:
                        continue
                    step = replace(trace.steps[0], index=index)
                    score = await self.score(messages, path.text, step, ledger)
                    done = step.finish_reason == "eos" or (
                        settings.stop_at_answer and has_final_answer(step.text)
                    )
                    expanded.append(_Path(path.text + step.text, [*path.steps, step], score, done))
            expanded.sort(key=lambda p: p.score, reverse=True)
            paths = expanded[: self.beams]
            finished += [p for p in paths if p.done]
            if len(finished) >= self.beams:
                break
        best = max(finished or paths or [_Path()], key=lambda p: p.score)
        reason = "answer" if has_final_answer(best.text) else "eos" if best.done else "max_steps"
        trace = Trace(problem.id, problem.question, best.steps, reason, ledger=ledger)
        samples = [{"candidates": candidates, "finished": len(finished), "score": _finite(best.score)}]
        return Outcome(best.text, ledger, reason, None, trace, samples)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class ProcessBestOfN(StepSearch):
    beams = 1


class BeamSearch(StepSearch):
    def __init__(self, spec: MethodSpec, settings: Settings) -> None:
        super().__init__(spec, settings)
        self.beams = spec.count("n", 4)


SEARCHES: Mapping[str, type[Method]] = MappingProxyType(
    {"maj": Majority, "bon": BestOfN, "pbon": ProcessBestOfN, "beam": BeamSearch}
)
