"""The RSD loop (paper Algorithm 1), one asynchronous pipeline per request.

Each call to `Engine.solve` runs draft → reward → (maybe) target for one
conversation, step after step, on its own: many requests can be in flight at once
and none waits for another. All per-request state lives in the call; the engine
holds only the two models. How each step is written and judged — the mode, the
reward source, ω, the budgets — is the `Policy` the caller passes, or what its
`PolicySource` answers when the engine asks at the start of the step.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rsdchat.core.answers import has_final_answer
from rsdchat.core.decision import Decision, decide
from rsdchat.core.errors import BackendError, ConfigError
from rsdchat.core.events import EventSink, Finished, StepDone, StepScored, StepStarted, TokenText, ignore
from rsdchat.core.policy import Mode, Policy, PolicySource, fixed
from rsdchat.core.protocols import Decides, Feature, LogprobModel, RewardSource, StepGenerator, features
from rsdchat.core.trace import Step, Trace
from rsdchat.core.types import Context, Message, Role, StepRequest, Usage
from rsdchat.core.weighting import BinaryStep, Signals


def _check_text(context: Context) -> None:
    """A conversation no model can read (a lone surrogate, bytes that were not UTF-8) ends at once."""
    for text in (*(m.content for m in context.messages), context.response):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BackendError(
                f"the text is not valid Unicode at character {exc.start} (bytes that are not UTF-8?)"
            ) from None


def _check_decision_band(policy: Policy, reward: str, band: tuple[float, float]) -> None:
    """ConfigError unless the binary ω with δ in `band` replays the decision `reward` makes itself."""
    low, high = band
    delta, binary = policy.weighting.threshold, isinstance(policy.weighting, BinaryStep)
    if binary and delta is not None and (low < delta <= high or low == delta == high):
        return
    deltas = f"in ({low:g}, {high:g}]" if low < high else f"= {low:g}"
    raise ConfigError(
        f"setting {'delta' if binary else 'weighting'}: reward {reward} decides each step itself; "
        f"only the binary weighting with δ {deltas} keeps the steps it keeps"
    )


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
    """The draft model m and the target model M; `solve` writes answers with them."""

    def __init__(self, *, draft: StepGenerator | None, target: StepGenerator | None) -> None:
        self.draft = draft
        self.target = target

    def check(self, policy: Policy) -> None:
        """ConfigError if `policy` needs a model, a reward or a feature this engine lacks."""
        if policy.mode is not Mode.DRAFT_ONLY and self.target is None:
            raise ConfigError(f"mode {policy.mode.value} needs a target model")
        if policy.mode is not Mode.TARGET_ONLY and self.draft is None:
            raise ConfigError(f"mode {policy.mode.value} needs a draft model")
        if policy.mode is Mode.RSD and policy.reward is None:
            raise ConfigError("mode rsd needs a reward source")
        self._check_features(policy)
        delta, reward = policy.weighting.threshold, policy.reward
        if policy.mode is Mode.RSD and delta is not None and reward is not None and reward.bounds is not None:
            low, high = reward.bounds
            if not low <= delta <= high:
                every = "rejected" if delta > high else "accepted"
                raise ConfigError(
                    f"setting delta: {delta:g} is outside the range of reward {reward.name}, "
                    f"[{low:g}, {high:g}]: every draft step would be {every}"
                )
        if policy.mode is Mode.RSD and isinstance(reward, Decides):
            _check_decision_band(policy, reward.name, reward.decision_band)
        logprobs = policy.mode is Mode.RSD and policy.weighting.needs_logprobs
        if logprobs and not isinstance(self.target, LogprobModel):
            name = policy.weighting.name
            raise ConfigError(f"weighting {name} needs log-probabilities the target backend does not give")

    def _check_features(self, policy: Policy) -> None:
        """ConfigError if a model that writes steps under `policy` does not honour what its requests ask."""
        reuse = policy.mode is Mode.RSD and policy.reuse_draft
        if reuse and policy.temperature > 0:
            raise ConfigError(
                "setting reuse_draft: a rejected draft step is checked greedily only; "
                "set temperature 0 or turn reuse_draft off"
            )
        for role, model in ((Role.DRAFT, self.draft), (Role.TARGET, self.target)):
            if model is None or role not in policy.mode.roles:
                continue
            has = features(model)
            info = model.info
            where = f"the {info.backend} backend's" if info.backend else "the"
            where = f"{where} {role.value} ({info.name})"
            if policy.temperature > 0 and Feature.SAMPLING not in has:
                raise ConfigError(f"setting temperature: {where} writes greedy steps only; set temperature 0")
            if reuse and role is Role.TARGET and Feature.PROPOSAL not in has:
                raise ConfigError(
                    f"setting reuse_draft: {where} cannot check a rejected draft step; turn reuse_draft off"
                )

    async def solve(
        self,
        messages: Sequence[Message],
        policy: Policy | PolicySource,
        *,
        request_id: str = "0",
        seed: int = 0,
        emit: EventSink = ignore,
        prefix: str = "",
    ) -> Trace:
        """Answer the conversation `messages` (ending with a user turn) step by step.

        `policy` is asked once per step when it is a source. `prefix` is a partial
        reply to continue (its steps are not part of the trace). Backend failures end
        the trace with finish_reason "error" (the steps so far are kept); cancellation
        ends it with "cancelled" and is re-raised. Either way a `Finished` event
        carries the trace.
        """
        source = fixed(policy) if isinstance(policy, Policy) else policy
        context = Context(tuple(messages), prefix)
        trace = Trace(request_id, context.question)
        run = _Run(trace, seed, random.Random(f"accept:{seed}"), emit)  # u apart from samplers' seeds
        started = time.perf_counter()
        try:
            _check_text(context)
            await self._loop(context, source, run)
        except asyncio.CancelledError:
            trace.finish_reason = "cancelled"
            raise
        except BackendError as exc:
            trace.finish_reason, trace.error, trace.failure = "error", str(exc), exc
        except BaseException as exc:
            trace.finish_reason, trace.error = "error", str(exc) or type(exc).__name__
            raise
        finally:
            trace.seconds = time.perf_counter() - started
            emit(Finished(request_id, trace))
        return trace

    async def _loop(self, context: Context, source: PolicySource, run: _Run) -> None:
        """Algorithm 1: draft a step, score it, keep it or let the target write it.

        An empty draft step (the draft ends the reply) is taken as it is, unscored. With
        `keep_pen` k > 0 the target, having rewritten a rejected step, also writes the next k.
        """
        trace, index = run.trace, 0
        pen = 0  # steps the target still writes undrafted after a rejection (keep_pen)
        while True:
            policy = source(index)  # asked once per step: a change applies from the next one
            self.check(policy)
            written = sum(step.tokens for step in trace.answer_steps)
            if index >= policy.max_steps or written >= policy.max_tokens:
                trace.finish_reason = "max_steps" if index >= policy.max_steps else "max_tokens"
                return
            budget = min(policy.max_step_tokens, policy.max_tokens - written)

            if policy.mode is Mode.TARGET_ONLY:
                step = await self._write(Role.TARGET, context, index, budget, policy, run)
            elif policy.mode is Mode.RSD and pen > 0:  # the target keeps the pen after a rejection
                pen -= 1
                step = await self._write(Role.TARGET, context, index, budget, policy, run)
            else:
                step = await self._write(Role.DRAFT, context, index, budget, policy, run)  # ŷ_i ~ m
                if policy.mode is Mode.RSD and step.text.strip():
                    decision = await self._judge(context, step, policy, run)  # r_i, A_ω(r_i)
                    if not decision.accepted:
                        run.emit(StepDone(trace.request_id, step))  # the rejected draft, for the record
                        proposal = step.text if policy.reuse_draft else None  # checked, never trusted
                        step = await self._write(
                            Role.TARGET, context, index, budget, policy, run, proposal
                        )  # y_i ~ M
                        pen = policy.keep_pen

            if policy.score_target_steps and policy.reward is not None and step.author is Role.TARGET:
                await self._score_only(context, step, policy.reward, run.trace)
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
        self,
        role: Role,
        context: Context,
        index: int,
        budget: int,
        policy: Policy,
        run: _Run,
        proposal: str | None = None,
    ) -> Step:
        model = self.draft if role is Role.DRAFT else self.target
        assert model is not None  # checked by check()
        trace = run.trace
        seed = step_seed(run.seed, index, role)
        request = StepRequest(budget, policy.stop, policy.temperature, policy.top_p, seed, proposal)
        run.emit(StepStarted(trace.request_id, index, role))

        def on_token(text: str) -> None:
            run.emit(TokenText(trace.request_id, index, role, text))

        started = time.perf_counter()
        generation = await model.generate(context, request, on_token)
        step = Step(index, role, generation, mode=policy.mode)
        self._charge(trace, step, role, generation.usage, model.info.n_params)
        for assist in generation.assists:
            self._charge(trace, step, assist.role, assist.usage, assist.n_params)
        step.seconds = time.perf_counter() - started
        trace.steps.append(step)
        return step

    async def _judge(self, context: Context, step: Step, policy: Policy, run: _Run) -> Decision:
        """Score the draft step and apply the acceptance criterion A_ω."""
        reward = policy.reward
        assert reward is not None  # checked by check()
        trace = run.trace
        started = time.perf_counter()
        generation = step.generation
        score = await reward.score(context, generation)
        self._charge(trace, step, Role.REWARD, score.usage, reward.n_params)
        step.detail, step.reward_source = score.detail, score.decided_by or reward.name
        signals = Signals(score.reward, generation.mean_logprob, score.target_logprob)
        if policy.weighting.needs_logprobs:
            signals = await self._with_logprobs(context, step, signals, policy, trace)
        decision = decide(signals, policy.weighting, run.rng)
        step.decision, step.accepted = decision, decision.accepted
        step.seconds += time.perf_counter() - started
        run.emit(StepScored(trace.request_id, step.index, decision, step.reward_source or "", step.detail))
        return decision

    async def _with_logprobs(
        self, context: Context, step: Step, signals: Signals, policy: Policy, trace: Trace
    ) -> Signals:
        if signals.draft_logprob is None:
            name = policy.weighting.name
            raise ConfigError(f"weighting {name} needs log-probabilities the draft backend does not give")
        if signals.target_logprob is None:
            assert isinstance(self.target, LogprobModel)  # checked by check()
            scored = await self.target.logprobs(context, step.text)
            self._charge(trace, step, Role.TARGET, scored.usage, self.target.info.n_params)
            signals = Signals(signals.reward, signals.draft_logprob, scored.mean)
        return signals

    async def _score_only(self, context: Context, step: Step, reward: RewardSource, trace: Trace) -> None:
        if not step.text.strip():
            return
        score = await reward.score(context, step.generation)
        self._charge(trace, step, Role.REWARD, score.usage, reward.n_params)
        step.score, step.detail = score.reward, score.detail
        step.reward_source = score.decided_by or reward.name

    @staticmethod
    def _charge(trace: Trace, step: Step, role: Role, usage: Usage, n_params: int) -> None:
        step.ledger.add(role, usage, n_params)
        trace.ledger.add(role, usage, n_params)
