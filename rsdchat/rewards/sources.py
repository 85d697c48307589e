"""Reward sources that need no reward-model weights, each registered as a `RewardPlugin`.

No process or outcome reward model can be installed on a machine without a model
hub, so the embedded default scores steps with signals it can compute itself:
the target's or the draft's own log-probabilities, the target asked as a judge, and
a check of the arithmetic written in the step. Each maps to [0, 1] like a PRM. They
are entry points of rsdchat itself (group `rsdchat.rewards`), like any plugin's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from rsdchat.core.errors import ConfigError
from rsdchat.core.protocols import LogprobModel, RewardSource, Score, StepGenerator
from rsdchat.core.types import Context, Generation, Message, Usage
from rsdchat.plugins import RewardPlugin
from rsdchat.rewards.arithmetic import ArithmeticReport, check_arithmetic

Kind = Literal["process", "outcome"]
UNIT = (0.0, 1.0)


def per_token_probability(mean_logprob: float) -> float:
    """exp(mean log P): the geometric-mean token probability; NaN for a value that is no
    log-probability (NaN, ±inf, or above 0, as a faulty server may send), which the engine
    rejects as an invalid reward."""
    if not math.isfinite(mean_logprob) or mean_logprob > 1e-6:
        return math.nan
    return math.exp(mean_logprob)


def logprob_model(model: StepGenerator, who: str, reward: str) -> LogprobModel:
    """`model`, which reward `reward` reads as `who` ("target"), if it gives log-probabilities."""
    if not isinstance(model, LogprobModel):
        raise ConfigError(f"reward {reward} needs a {who} backend that gives log-probabilities")
    return model


def target_reward(name: str, description: str, make: Callable[[StepGenerator], RewardSource]) -> RewardPlugin:
    """The plugin of a reward source built on the target alone (it reads steps): `make(target)`."""
    return RewardPlugin(name, description, lambda ctx: make(ctx.need("target", name)), cost="target")


class _Local:
    """What the sources computed in process share: nothing to close."""

    async def aclose(self) -> None:
        return None


@dataclass
class ReadsWithTarget(_Local):
    """What the sources that read a step with the target share: a target that gives
    log-probabilities (checked when built), whose parameters are the source's."""

    target: StepGenerator
    name: str
    n_params: int = field(init=False)

    def __post_init__(self) -> None:
        self._model = logprob_model(self.target, "target", self.name)
        self.n_params = self.target.info.n_params


@dataclass
class TargetLogprob(ReadsWithTarget):
    """r = P_M(step)^(1/n): how likely the target finds the draft's step, per token.

    Cheap where the target's cache already holds the context: only the step's tokens
    are read (prefill, no generation).
    """

    name: str = "target-logprob"
    kind: Kind = "process"
    default_delta: float = 0.75  # rejects ~1/3 of 0.5B drafts on GSM8K (docs/rewards.md)
    bounds: tuple[float, float] | None = UNIT

    async def score(self, context: Context, step: Generation) -> Score:
        scored = await self._model.logprobs(context, step.text)
        return Score(per_token_probability(scored.mean), scored.usage, target_logprob=scored.mean)


@dataclass
class DraftConfidence(_Local):
    """r = P_m(step)^(1/n): the draft's own confidence in what it wrote. Free."""

    name: str = "draft-confidence"
    kind: Kind = "process"
    default_delta: float = 0.88  # rejects ~1/3 of 0.5B drafts on GSM8K (docs/rewards.md)
    bounds: tuple[float, float] | None = UNIT
    n_params: int = 0

    async def score(self, context: Context, step: Generation) -> Score:
        mean = step.mean_logprob
        if mean is None:
            raise ConfigError(
                "reward draft-confidence needs token log-probabilities, which the draft backend did not give"
            )
        return Score(per_token_probability(mean))


JUDGE_SYSTEM = "You are a careful math teacher who checks solutions step by step."
JUDGE_QUESTION = (
    "Problem:\n{question}\n\nSolution so far:\n{previous}\n\nNew step:\n{step}\n\n"
    "Is the new step correct? Answer Yes or No."
)


@dataclass
class Judge(ReadsWithTarget):
    """r = P(Yes) / (P(Yes) + P(No)) when the target is asked whether the step is correct."""

    name: str = "judge"
    kind: Kind = "process"
    default_delta: float = 0.5
    bounds: tuple[float, float] | None = UNIT

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
class Arithmetic(_Local):
    """r = share of the equations written in the step that are right (1 if none). Free."""

    name: str = "arithmetic"
    kind: Kind = "process"
    default_delta: float = 1.0
    bounds: tuple[float, float] | None = UNIT
    n_params: int = 0

    async def score(self, context: Context, step: Generation) -> Score:
        started = time.perf_counter()
        report = check_arithmetic(step.text)
        return Score(report.reward, Usage(seconds=time.perf_counter() - started), detail=_checked(report))


def _checked(report: ArithmeticReport) -> str:
    """'1 of 2 equations wrong', '2 equations check out', or '' when the step writes none."""
    if not report.checked:
        return ""
    if report.wrong:
        return f"{report.wrong} of {report.checked} equations wrong"
    return "1 equation checks out" if report.checked == 1 else f"{report.checked} equations check out"


TARGET_LOGPROB = target_reward(
    "target-logprob",
    "the target's per-token probability of the draft step (reads the step, writes nothing)",
    TargetLogprob,
)
DRAFT_CONFIDENCE = RewardPlugin(
    "draft-confidence", "the draft's own per-token probability of its step", lambda ctx: DraftConfidence()
)
JUDGE = target_reward("judge", "the target asked 'is this step correct?', P(Yes)", Judge)
ARITHMETIC = RewardPlugin(
    "arithmetic",
    "share of the equations in the step that check out (deterministic)",
    lambda ctx: Arithmetic(),
)
