"""Reward sources that need no reward-model weights.

No process or outcome reward model can be installed on a machine without a model
hub, so the embedded default scores steps with signals it can compute itself:
the target's or the draft's own log-probabilities, the target asked as a judge, and
a check of the arithmetic written in the step. Each maps to [0, 1] like a PRM.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

from rsdchat.errors import ConfigError
from rsdchat.protocols import LogprobModel, RewardSource, Score, StepGenerator
from rsdchat.rewards.arithmetic import check_arithmetic
from rsdchat.types import Context, Generation, Message, Usage


def _logprob_model(model: StepGenerator | None, who: str, reward: str) -> LogprobModel:
    if model is None or not isinstance(model, LogprobModel):
        raise ConfigError(f"reward {reward} needs a {who} backend that gives log-probabilities")
    return model


@dataclass
class TargetLogprob:
    """r = P_M(step)^(1/n): how likely the target finds the draft's step, per token.

    Cheap where the target's cache already holds the context: only the step's tokens
    are read (prefill, no generation).
    """

    target: StepGenerator
    name: str = "target-logprob"
    kind: Literal["process", "outcome"] = "process"
    default_delta: float = 0.75  # rejects ~1/3 of 0.5B drafts on GSM8K (docs/rewards.md)
    n_params: int = field(init=False)

    def __post_init__(self) -> None:
        self._model = _logprob_model(self.target, "target", self.name)
        self.n_params = self.target.info.n_params

    async def score(self, context: Context, step: Generation) -> Score:
        scored = await self._model.logprobs(context, step.text)
        return Score(math.exp(scored.mean), scored.usage, target_logprob=scored.mean)


@dataclass
class DraftConfidence:
    """r = P_m(step)^(1/n): the draft's own confidence in what it wrote. Free."""

    name: str = "draft-confidence"
    kind: Literal["process", "outcome"] = "process"
    default_delta: float = 0.88  # rejects ~1/3 of 0.5B drafts on GSM8K (docs/rewards.md)
    n_params: int = 0

    async def score(self, context: Context, step: Generation) -> Score:
        mean = step.mean_logprob
        if mean is None:
            raise ConfigError(
                "reward draft-confidence needs token log-probabilities, which the draft backend did not give"
            )
        return Score(math.exp(mean))


JUDGE_SYSTEM = "You are a careful math teacher who checks solutions step by step."
JUDGE_QUESTION = (
    "Problem:\n{question}\n\nSolution so far:\n{previous}\n\nNew step:\n{step}\n\n"
    "Is the new step correct? Answer Yes or No."
)


@dataclass
class Judge:
    """r = P(Yes) / (P(Yes) + P(No)) when the target is asked whether the step is correct."""

    target: StepGenerator
    name: str = "judge"
    kind: Literal["process", "outcome"] = "process"
    default_delta: float = 0.5
    n_params: int = field(init=False)

    def __post_init__(self) -> None:
        self._model = _logprob_model(self.target, "target", self.name)
        self.n_params = self.target.info.n_params

    async def score(self, context: Context, step: Generation) -> Score:
        prompt = JUDGE_QUESTION.format(
            question=context.question, previous=context.response.strip() or "(none)", step=step.text.strip()
        )
        judge = Context((Message("system", JUDGE_SYSTEM), Message("user", prompt)))
        usage = Usage()
        logprob = {}
        for answer in ("Yes", "No"):
            scored = await self._model.logprobs(judge, answer)
            usage += scored.usage
            logprob[answer] = sum(scored.token_logprobs)
        top = max(logprob.values())
        yes, no = (math.exp(logprob[a] - top) for a in ("Yes", "No"))
        return Score(yes / (yes + no), usage)


@dataclass
class Arithmetic:
    """r = share of the equations written in the step that are right (1 if none). Free."""

    name: str = "arithmetic"
    kind: Literal["process", "outcome"] = "process"
    default_delta: float = 1.0
    n_params: int = 0

    async def score(self, context: Context, step: Generation) -> Score:
        started = time.perf_counter()
        report = check_arithmetic(step.text)
        detail = f"{report.wrong} of {report.checked} equations wrong" if report.checked else ""
        return Score(report.reward, Usage(seconds=time.perf_counter() - started), detail=detail)


@dataclass
class Product:
    """r = r_1 · r_2 · …: e.g. arithmetic*draft-confidence vetoes a confident step with wrong sums."""

    parts: tuple[RewardSource, ...]
    kind: Literal["process", "outcome"] = "process"
    name: str = field(init=False)
    default_delta: float = field(init=False)
    n_params: int = field(init=False)

    def __post_init__(self) -> None:
        self.name = "*".join(part.name for part in self.parts)
        self.default_delta = math.prod(part.default_delta for part in self.parts)
        self.n_params = max(part.n_params for part in self.parts)

    async def score(self, context: Context, step: Generation) -> Score:
        reward, usage, target_logprob, details = 1.0, Usage(), None, []
        for part in self.parts:
            score = await part.score(context, step)
            reward *= score.reward
            usage += score.usage
            target_logprob = score.target_logprob if score.target_logprob is not None else target_logprob
            details += [score.detail] if score.detail else []
        return Score(reward, usage, target_logprob, "; ".join(details))

    async def aclose(self) -> None:
        """Close the parts that hold connections (reward models over HTTP)."""
        for part in self.parts:
            close = getattr(part, "aclose", None)
            if close is not None:
                await close()
