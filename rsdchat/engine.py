"""The RSD loop (paper Algorithm 1), one asynchronous pipeline per request.

Each call to `Engine.solve` runs draft → reward → (maybe) target for one
conversation, step after step, on its own: many requests can be in flight at once
and none waits for another. All per-request state lives in the call; the engine
only holds the models and the policy, which a front end may swap between steps.
"""

from __future__ import annotations

import asyncio
import enum
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from rsdchat.decision import Decision, decide
from rsdchat.errors import BackendError, ConfigError
from rsdchat.events import EventSink, Finished, StepDone, StepScored, StepStarted, TokenText, ignore
from rsdchat.protocols import LogprobModel, RewardSource, StepGenerator
from rsdchat.trace import Step, Trace
from rsdchat.types import Context, Message, Role, StepRequest, Usage
from rsdchat.weighting import BinaryStep, Signals, Weighting


class Mode(str, enum.Enum):
    RSD = "rsd"
    TARGET_ONLY = "target-only"
    DRAFT_ONLY = "draft-only"


@dataclass(frozen=True)
class Policy:
    """How answers are written. Frozen: a change is a new Policy, applied from the next step."""

    mode: Mode = Mode.RSD
    weighting: Weighting = field(default_factory=lambda: BinaryStep(0.7))
    max_steps: int = 32
    max_step_tokens: int = 256  # per step: no single step may eat the budget
    max_tokens: int = 1024  # generated tokens in the answer
    stop: tuple[str, ...] = ("\n\n",)  # a step ends at a blank line
    temperature: float = 0.0
    top_p: float = 1.0
    stop_at_answer: bool = True  # end once a step holds a complete \boxed{...}
    score_target_steps: bool = False  # also score the target's steps (shown, never decided on)


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def has_final_answer(text: str) -> bool:
    """True if `text` holds a \\boxed{...} whose braces close."""
    for match in _BOXED.finditer(text):
        depth = 1
        for char in text[match.end() :]:
            depth += {"{": 1, "}": -1}.get(char, 0)
            if depth == 0:
                return True
    return False


def step_seed(seed: int, index: int, role: Role) -> int:
    """A sampling seed per (request seed, step, role): same seed ⇒ same transcript."""
    return (seed * 1_000_003 + index * 7 + (role is Role.TARGET)) % (2**31)


@dataclass
class _Run:
    """The state of one request: nothing here is shared with another request."""

    trace: Trace
    seed: int
    rng: random.Random  # acceptance draws u ~ U(0, 1)
    emit: EventSink


class Engine:
    """Draft, target and reward source, and the policy that ties them together."""

    def __init__(
        self,
        *,
        draft: StepGenerator | None,
        target: StepGenerator | None,
        reward: RewardSource | None,
        policy: Policy | None = None,
    ) -> None:
        self.draft = draft
        self.target = target
        self.reward = reward
        self.policy = policy or Policy()

    def _check(self, policy: Policy, reward: RewardSource | None) -> None:
        if policy.mode is not Mode.DRAFT_ONLY and self.target is None:
            raise ConfigError(f"mode {policy.mode.value} needs a target model")
        if policy.mode is not Mode.TARGET_ONLY and self.draft is None:
            raise ConfigError(f"mode {policy.mode.value} needs a draft model")
        if policy.mode is Mode.RSD and reward is None:
            raise ConfigError("mode rsd needs a reward source")

    async def solve(
        self,
        messages: Sequence[Message],
        *,
        request_id: str = "0",
        seed: int = 0,
        emit: EventSink = ignore,
    ) -> Trace:
        """Answer the conversation `messages` (ending with a user turn) step by step.

        Backend failures end the trace with finish_reason "error" (the steps so far
        are kept); cancellation ends it with "cancelled" and is re-raised. Either
        way a `Finished` event carries the trace.
        """
        context = Context(tuple(messages))
        trace = Trace(request_id, context.question)
        run = _Run(trace, seed, random.Random(f"accept:{seed}"), emit)  # u apart from samplers' seeds
        started = time.perf_counter()
        try:
            await self._loop(context, run)
        except asyncio.CancelledError:
            trace.finish_reason = "cancelled"
            raise
        except BackendError as exc:
            trace.finish_reason, trace.error = "error", str(exc)
        except BaseException as exc:
            trace.finish_reason, trace.error = "error", str(exc) or type(exc).__name__
            raise
        finally:
            trace.seconds = time.perf_counter() - started
            emit(Finished(request_id, trace))
        return trace

    async def _loop(self, context: Context, run: _Run) -> None:
        """Algorithm 1: draft a step, score it, keep it or let the target write it.

        An empty draft step (the draft ends the reply) is taken as it is, unscored.
        """
        trace, index = run.trace, 0
        while True:
            policy, reward = self.policy, self.reward  # read once per step: changes apply from the next
            self._check(policy, reward)
            written = sum(step.tokens for step in trace.answer_steps)
            if index >= policy.max_steps or written >= policy.max_tokens:
                trace.finish_reason = "max_steps" if index >= policy.max_steps else "max_tokens"
                return
            budget = min(policy.max_step_tokens, policy.max_tokens - written)

            if policy.mode is Mode.TARGET_ONLY:
                step = await self._write(Role.TARGET, context, index, budget, policy, run)
            else:
                step = await self._write(Role.DRAFT, context, index, budget, policy, run)  # ŷ_i ~ m
                if policy.mode is Mode.RSD and step.text.strip():
                    decision = await self._judge(context, step, policy, reward, run)  # r_i, A_ω(r_i)
                    if not decision.accepted:
                        run.emit(StepDone(trace.request_id, step))  # the rejected draft, for the record
                        step = await self._write(Role.TARGET, context, index, budget, policy, run)  # y_i ~ M

            if reward is not None and step.author is Role.TARGET and policy.score_target_steps:
                await self._score_only(context, step, reward, trace)
            run.emit(StepDone(trace.request_id, step))
            context = context.extend(step.text)
            index += 1
            if policy.stop_at_answer and has_final_answer(step.text):
                trace.finish_reason = "answer"
                return
            if step.finish_reason == "eos":
                trace.finish_reason = "eos"
                return

    async def _write(
        self, role: Role, context: Context, index: int, budget: int, policy: Policy, run: _Run
    ) -> Step:
        model = self.draft if role is Role.DRAFT else self.target
        assert model is not None  # checked by _check
        trace = run.trace
        request = StepRequest(
            budget, policy.stop, policy.temperature, policy.top_p, step_seed(run.seed, index, role)
        )
        run.emit(StepStarted(trace.request_id, index, role))

        def on_token(text: str) -> None:
            run.emit(TokenText(trace.request_id, index, role, text))

        started = time.perf_counter()
        generation = await model.generate(context, request, on_token)
        step = Step(
            index,
            role,
            generation,
            weighting=policy.weighting.describe() if policy.mode is Mode.RSD else policy.mode.value,
        )
        self._charge(trace, step, role, generation.usage, model.info.n_params)
        step.seconds = time.perf_counter() - started
        trace.steps.append(step)
        return step

    async def _judge(
        self, context: Context, step: Step, policy: Policy, reward: RewardSource | None, run: _Run
    ) -> Decision:
        """Score the draft step and apply the acceptance criterion A_ω."""
        assert reward is not None  # checked by _check
        trace = run.trace
        started = time.perf_counter()
        generation = step.generation
        score = await reward.score(context, generation)
        self._charge(trace, step, Role.REWARD, score.usage, reward.n_params)
        step.detail = score.detail
        signals = Signals(score.reward, generation.mean_logprob, score.target_logprob)
        if policy.weighting.needs_logprobs:
            signals = await self._with_logprobs(context, step, signals, policy, trace)
        decision = decide(signals, policy.weighting, run.rng)
        step.reward, step.omega = decision.reward, decision.omega
        step.accepted, step.reward_invalid = decision.accepted, decision.invalid
        step.seconds += time.perf_counter() - started
        run.emit(StepScored(trace.request_id, step.index, decision))
        return decision

    async def _with_logprobs(
        self, context: Context, step: Step, signals: Signals, policy: Policy, trace: Trace
    ) -> Signals:
        name = policy.weighting.name
        if signals.draft_logprob is None:
            raise ConfigError(f"weighting {name} needs log-probabilities the draft backend does not give")
        if signals.target_logprob is None:
            if not isinstance(self.target, LogprobModel):
                raise ConfigError(
                    f"weighting {name} needs log-probabilities the target backend does not give"
                )
            scored = await self.target.logprobs(context, step.text)
            self._charge(trace, step, Role.TARGET, scored.usage, self.target.info.n_params)
            signals = Signals(signals.reward, signals.draft_logprob, scored.mean)
        return signals

    async def _score_only(self, context: Context, step: Step, reward: RewardSource, trace: Trace) -> None:
        if not step.text.strip():
            return
        score = await reward.score(context, step.generation)
        self._charge(trace, step, Role.REWARD, score.usage, reward.n_params)
        step.reward, step.detail = score.reward, score.detail

    @staticmethod
    def _charge(trace: Trace, step: Step, role: Role, usage: Usage, n_params: int) -> None:
        step.ledger.add(role, usage, n_params)
        trace.ledger.add(role, usage, n_params)
