"""The RSD loop (paper Algorithm 1) driven by scripted models and rewards."""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from chat_helpers import wait_until

from rsdchat.core.answers import has_final_answer
from rsdchat.core.engine import Engine
from rsdchat.core.errors import BackendError, ConfigError
from rsdchat.core.events import Event, Finished, StepDone, StepScored, StepStarted, TokenText
from rsdchat.core.policy import Mode, Policy
from rsdchat.core.protocols import StepGenerator
from rsdchat.core.trace import Trace
from rsdchat.core.types import Context, Generation, Message, Role, StepRequest, step_end
from rsdchat.core.weighting import BinaryStep, Clip, LikelihoodRatio, Weighting
from rsdchat.testing import ScriptedModel, ScriptedReward, steps_so_far

DRAFT, TARGET = Role.DRAFT, Role.TARGET
Q = (Message("user", "What is 2 + 3?"),)
D = ["d0 a b\n\n", "d1 c\n\n", "d2 so \\boxed{5}\n\n"]
T = ["t0 x\n\n", "t1 y z\n\n", "t2 so \\boxed{5}\n\n"]
LONG = [f"s{i} one two\n\n" for i in range(20)]  # 3 tokens per step, never an answer
MIXED = {D[0]: 0.9, D[1]: 0.1, D[2]: 0.8}  # with δ = 0.5: draft, target, draft


class Bound:
    """An engine and the policy a test tells it, as a front end does."""

    def __init__(self, engine: Engine, policy: Policy) -> None:
        self.engine, self.policy = engine, policy

    @property
    def draft(self) -> StepGenerator | None:
        return self.engine.draft

    @draft.setter
    def draft(self, model: StepGenerator) -> None:
        self.engine.draft = model

    async def solve(self, messages: tuple[Message, ...], **kwargs: Any) -> Trace:
        return await self.engine.solve(messages, self.policy, **kwargs)


def make(draft: Any = D, target: Any = T, table: dict[str, float] | None = None, **policy: Any):
    d = ScriptedModel(draft, name="draft", n_params=1_000)
    t = ScriptedModel(target, name="target", n_params=7_000)
    r = ScriptedReward(lambda ctx, g: (table or {}).get(g.text, 0.0), n_params=500, bounds=None)  # any δ
    policy.setdefault("weighting", BinaryStep(0.5))
    return Bound(Engine(draft=d, target=t), Policy(reward=r, **policy)), d, t, r


def shape(trace: Trace) -> list[tuple[Role, str, bool]]:
    return [(s.author, s.text, s.accepted) for s in trace.steps]


async def test_delta_zero_takes_every_step_from_the_draft() -> None:
    engine, _, t, r = make(table={D[0]: 0.0, D[1]: 0.3, D[2]: 0.9}, weighting=BinaryStep(0.0))  # r ≥ 0
    trace = await engine.solve(Q)
    assert shape(trace) == [(DRAFT, text, True) for text in D]
    assert trace.text == "".join(D) and trace.finish_reason == "answer"
    assert t.calls == [] and r.calls == D
    assert [s.reward for s in trace.steps] == [0.0, 0.3, 0.9] and trace.acceptance.rate == 1.0


async def test_delta_above_every_reward_takes_every_step_from_the_target() -> None:
    engine, d, t, _ = make(table=dict.fromkeys(D, 1.0), weighting=BinaryStep(1.5))
    trace = await engine.solve(Q)
    assert shape(trace) == [x for i in range(3) for x in ((DRAFT, D[i], False), (TARGET, T[i], True))]
    assert trace.text == "".join(T) and all(text not in trace.text for text in D)
    assert [s.index for s in trace.steps] == [0, 0, 1, 1, 2, 2]
    acceptance = trace.acceptance
    assert (acceptance.judged, acceptance.accepted, acceptance.rate) == (3, 0, 0.0)
    prefixes = ["", T[0], T[0] + T[1]]  # both models only ever see the answer so far
    assert [c.response for c in d.calls] == prefixes == [c.response for c in t.calls]


async def test_mixed_rewards_interleave_exactly() -> None:
    engine, d, t, r = make(table=MIXED)
    trace = await engine.solve(Q)
    expected = [(DRAFT, D[0], True), (DRAFT, D[1], False), (TARGET, T[1], True), (DRAFT, D[2], True)]
    assert shape(trace) == expected
    assert trace.text == D[0] + T[1] + D[2] and [s.index for s in trace.steps] == [0, 1, 1, 2]
    assert [c.response for c in t.calls] == [D[0]] and d.calls[2].response == D[0] + T[1]
    assert r.calls == D and trace.acceptance.rate == pytest.approx(2 / 3)


@pytest.mark.parametrize("keep_pen", [1, 2])
async def test_the_target_keeps_the_pen_for_keep_pen_steps_after_a_rejection(keep_pen: int) -> None:
    draft, target = [f"d{i}\n\n" for i in range(6)], [f"t{i}\n\n" for i in range(6)]
    table = {text: 0.9 for text in draft} | {draft[1]: 0.1}  # only step 1 is rejected
    engine, d, t, r = make(draft, target, table, keep_pen=keep_pen, max_steps=5)
    trace = await engine.solve(Q)
    pen = [(TARGET, target[i], True) for i in range(2, 2 + keep_pen)]  # undrafted, unjudged
    rest = [(DRAFT, draft[i], True) for i in range(2 + keep_pen, 5)]
    start = [(DRAFT, draft[0], True), (DRAFT, draft[1], False), (TARGET, target[1], True)]
    assert shape(trace) == [*start, *pen, *rest]
    assert r.calls == draft[:2] + draft[2 + keep_pen : 5]  # the pen steps were never drafted or scored
    assert len(d.calls) == 5 - keep_pen and len(t.calls) == 1 + keep_pen
    assert [s.decision is None for s in trace.steps if s.author is TARGET] == [True] * (1 + keep_pen)


def compress(events: list[Event]) -> list[tuple[Any, ...]]:
    """The events in order (a run of tokens as one), checking that a step's tokens spell its text."""
    out: list[tuple[Any, ...]] = []
    for e in events:
        if isinstance(e, StepStarted):
            out.append(("start", e.index, e.author))
            text, writer = "", (e.index, e.author)
        elif isinstance(e, TokenText):
            assert (e.index, e.author) == writer
            text += e.text
            out += [] if out[-1] == ("tokens",) else [("tokens",)]
        elif isinstance(e, StepScored):
            out.append(("scored", e.index, e.decision.accepted))
        elif isinstance(e, StepDone):
            assert e.step.text == text
            out.append(("done", e.step.index, e.step.author, e.step.accepted))
        elif isinstance(e, Finished):
            out.append(("finished", e.trace.finish_reason))
    return out


async def test_events_come_in_order_and_tokens_spell_the_step() -> None:
    engine, *_ = make(table=MIXED)
    events: list[Event] = []
    trace = await engine.solve(Q, request_id="r1", emit=events.append)
    tok = ("tokens",)
    assert compress(events) == [
        *[("start", 0, DRAFT), tok, ("scored", 0, True), ("done", 0, DRAFT, True)],
        *[("start", 1, DRAFT), tok, ("scored", 1, False), ("done", 1, DRAFT, False)],
        *[("start", 1, TARGET), tok, ("done", 1, TARGET, True)],
        *[("start", 2, DRAFT), tok, ("scored", 2, True), ("done", 2, DRAFT, True)],
        ("finished", "answer"),
    ]
    assert all(e.request_id == "r1" for e in events) and events[-1] == Finished("r1", trace)
    assert [e.step for e in events if isinstance(e, StepDone)] == trace.steps


@pytest.mark.parametrize("mode", [Mode.TARGET_ONLY, Mode.DRAFT_ONLY])
async def test_single_model_modes_never_call_the_others(mode: Mode) -> None:
    engine, d, t, r = make(table=MIXED, mode=mode)
    trace = await engine.solve(Q)
    writer, idle, texts = (t, d, T) if mode is Mode.TARGET_ONLY else (d, t, D)
    author = TARGET if mode is Mode.TARGET_ONLY else DRAFT
    assert idle.calls == [] and r.calls == [] and len(writer.calls) == 3
    assert shape(trace) == [(author, text, True) for text in texts]
    assert all(s.reward is None and s.decision is None and s.mode is mode for s in trace.steps)
    alone = Engine(draft=d if author is DRAFT else None, target=t if author is TARGET else None)
    assert (await alone.solve(Q, Policy(mode=mode))).text == "".join(texts)
    with pytest.raises(ConfigError, match="needs a"):
        await alone.solve(Q, Policy(mode=Mode.RSD))


async def test_max_tokens_is_a_budget_on_the_answer_only() -> None:
    budgets: list[int] = []

    def script(ctx: Context, req: StepRequest) -> str:
        budgets.append(req.max_tokens)
        return LONG[steps_so_far(ctx)]

    engine, *_ = make(draft=script, target=script, max_tokens=7)  # every draft rejected
    trace = await engine.solve(Q)
    assert trace.finish_reason == "max_tokens"
    assert budgets == [7, 7, 4, 4, 1, 1]  # rejected drafts do not eat the budget
    assert [s.tokens for s in trace.answer_steps] == [3, 3, 1]
    assert trace.answer_steps[-1].finish_reason == "length" and trace.answer_steps[-1].text == "s2 "


async def test_max_step_tokens_and_max_steps() -> None:
    engine, *_ = make(draft=LONG, target=LONG, max_step_tokens=2, max_steps=3)  # every draft rejected
    trace = await engine.solve(Q)
    assert [(s.finish_reason, s.tokens) for s in trace.steps] == [("length", 2)] * 6
    assert trace.finish_reason == "max_steps" and len(trace.answer_steps) == 3  # drafts are not steps
    assert trace.text == "s0 one " * 3


async def test_stops_at_a_complete_answer_unless_told_not_to() -> None:
    assert all(map(has_final_answer, ["so \\boxed{5}", "\\boxed{\\frac{1}{2}}.", "\\fbox {3}", "\\boxed 7"]))
    assert not any(
        map(has_final_answer, ["\\boxed{5", "\\boxed{{1}", "the box is 5", "boxed{5}", "\\boxed{}"])
    )
    draft = [*D, "after\n\n"]
    engine, d, *_ = make(draft=draft, weighting=BinaryStep(0.0))
    trace = await engine.solve(Q)
    assert trace.finish_reason == "answer" and len(d.calls) == 3 and trace.text == "".join(D)
    engine, d, *_ = make(draft=draft, weighting=BinaryStep(0.0), stop_at_answer=False)
    trace = await engine.solve(Q)
    assert trace.finish_reason == "eos" and trace.text == "".join(draft)


@pytest.mark.parametrize(("delta", "text"), [(0.0, "a b\n\nso 5"), (2.0, "x\n\nit is 5")])  # draft/target eos
async def test_stops_at_eos(delta: float, text: str) -> None:
    engine, *_ = make(draft=["a b\n\n", "so 5"], target=["x\n\n", "it is 5"], weighting=BinaryStep(delta))
    trace = await engine.solve(Q)
    assert (trace.finish_reason, trace.text) == ("eos", text)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
async def test_non_finite_reward_is_a_counted_rejection(bad: float) -> None:
    engine, *_ = make(table={D[0]: 0.9, D[1]: bad, D[2]: 0.8})
    events: list[Event] = []
    trace = await engine.solve(Q, emit=events.append)
    assert trace.acceptance.invalid == 1 and trace.finish_reason == "answer"
    assert shape(trace)[1:3] == [(DRAFT, D[1], False), (TARGET, T[1], True)]
    assert [e.decision.invalid for e in events if isinstance(e, StepScored)] == [False, True, False]


async def test_backend_error_keeps_the_steps_so_far() -> None:
    def target(ctx: Context, req: StepRequest) -> str:
        if steps_so_far(ctx) == 1:
            raise BackendError("target server went away")
        return T[steps_so_far(ctx)]

    engine, *_ = make(target=target, weighting=BinaryStep(2.0))
    events: list[Event] = []
    trace = await engine.solve(Q, emit=events.append)
    assert (trace.finish_reason, trace.error) == ("error", "target server went away")
    assert shape(trace) == [(DRAFT, D[0], False), (TARGET, T[0], True), (DRAFT, D[1], False)]
    assert [type(e) for e in events].count(Finished) == 1 and events[-1] == Finished("0", trace)
    engine.draft = ScriptedModel(lambda ctx, req: 1 / 0)  # not a backend error: a bug, re-raised
    with pytest.raises(ZeroDivisionError):
        await engine.solve(Q, emit=events.append)
    assert isinstance(events[-1], Finished) and events[-1].trace.finish_reason == "error"


async def test_cancellation_mid_step() -> None:
    r = ScriptedReward(lambda ctx, g: 1.0)
    slow = ScriptedModel(["w " * 400 + "\n\n"], delay=0.005)  # a 2-second step
    engine = Engine(draft=slow, target=ScriptedModel(T))
    events: list[Event] = []
    task = asyncio.create_task(engine.solve(Q, Policy(reward=r), emit=events.append))
    await wait_until(lambda: any(isinstance(e, TokenText) for e in events))  # mid-step: streaming began
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [type(e) for e in events].count(Finished) == 1 and isinstance(events[-1], Finished)
    assert events[-1].trace.finish_reason == "cancelled" and events[-1].trace.steps == []
    assert r.calls == []


async def test_a_policy_source_is_asked_once_per_step_and_its_answer_applies_to_that_step() -> None:
    bound, *_ = make(weighting=BinaryStep(0.0))
    first = bound.policy
    stricter = replace(first, weighting=BinaryStep(2.0))
    asked: list[int] = []

    def source(index: int) -> Policy:
        asked.append(index)
        return first if index == 0 else stricter  # "a change applies from the next step"

    trace = await bound.engine.solve(Q, source)
    assert asked == [0, 1, 2]  # once per step, rejected drafts included in their step
    assert shape(trace) == [
        *[(DRAFT, D[0], True), (DRAFT, D[1], False), (TARGET, T[1], True)],
        *[(DRAFT, D[2], False), (TARGET, T[2], True)],
    ]
    judged = [s.decision.weighting for s in trace.steps if s.decision is not None]
    assert judged == [BinaryStep(0.0), BinaryStep(2.0), BinaryStep(2.0)]


CANDIDATES = ("A\n\n", "B\n\n", "C\n\n")
CANDIDATE_REWARD = {"A": 0.8, "B": 0.4, "C": 0.0}


def sampler(p: tuple[float, ...], tag: str = "", steps: int = 1) -> Any:
    """A temperature-independent step sampler: the choice depends on the step seed only."""

    def script(ctx: Context, req: StepRequest) -> str:
        if steps_so_far(ctx) >= steps:
            return ""
        choice = random.Random(req.seed).choices(CANDIDATES, p)[0]
        return f"{ctx.question} {tag}{steps_so_far(ctx)} {choice}" if tag else choice

    return script


def by_candidate(ctx: Context, step: Generation) -> float:
    return CANDIDATE_REWARD[step.text.strip()[-1]]


async def test_concurrent_requests_are_independent_and_reproducible() -> None:
    even = (1 / 3, 1 / 3, 1 / 3)
    d = ScriptedModel(sampler(even, "d", 4), delay=0.0005)
    t = ScriptedModel(sampler(even, "t", 4), delay=0.0005)
    policy = Policy(reward=ScriptedReward(by_candidate), weighting=Clip(), temperature=0.8)
    engine = Engine(draft=d, target=t)

    async def run(seeds: list[int]) -> dict[int, list[tuple[Role, str, bool]]]:
        solves = (
            engine.solve((Message("user", f"q{s}"),), policy, request_id=f"r{s}", seed=s) for s in seeds
        )
        traces = await asyncio.gather(*solves)
        assert [(tr.request_id, tr.finish_reason) for tr in traces] == [(f"r{s}", "eos") for s in seeds]
        return {s: shape(tr) for s, tr in zip(seeds, traces, strict=True)}

    first = await run(list(range(16)))
    assert first == await run(list(reversed(range(16))))
    assert {7: first[7]} == await run([7])
    assert len({tuple(steps) for steps in first.values()}) > 8  # seeds matter
    letters = [{text[-3] for who, text, _ in steps if who is DRAFT and text} for steps in first.values()]
    assert max(map(len, letters)) > 1  # and so does the step: each step gets its own seed
    assert all(text.startswith(f"q{s} ") for s, steps in first.items() for _, text, _ in steps if text)


async def test_a_delta_outside_the_rewards_range_is_refused_with_the_range() -> None:
    engine = Engine(draft=ScriptedModel(D), target=ScriptedModel(T))
    unit = ScriptedReward(lambda ctx, g: 0.5, name="unit")  # rewards in [0, 1]
    for delta, every in ((5.0, "rejected"), (-1.0, "accepted")):
        with pytest.raises(
            ConfigError, match=rf"delta: {delta:g} is outside the range of reward unit, \[0, 1\]"
        ):
            engine.check(Policy(reward=unit, weighting=BinaryStep(delta)))
        with pytest.raises(ConfigError, match=f"every draft step would be {every}"):
            await engine.solve(Q, Policy(reward=unit, weighting=BinaryStep(delta)))
    engine.check(Policy(reward=unit, weighting=BinaryStep(1.0)))  # the edges are fine
    engine.check(Policy(reward=ScriptedReward(lambda c, g: 0.0, bounds=None), weighting=BinaryStep(5.0)))


async def test_cost_ledger_adds_up() -> None:
    engine, *_ = make(table=MIXED)
    trace = await engine.solve(Q)
    params = {DRAFT: 1_000, TARGET: 7_000, Role.REWARD: 500}
    # draft wrote D (3 + 2 + 3 tokens, 3 calls), the target T[1] (3 tokens), 3 scores
    expected = {DRAFT: (3, 8), TARGET: (1, 3), Role.REWARD: (3, 0)}
    for role in Role:
        total = trace.ledger.usage[role]
        per_step = [s.ledger.usage[role] for s in trace.steps if role in s.ledger.usage]
        assert (total.prefill_tokens, total.generated_tokens) == expected[role]
        assert sum(u.prefill_tokens for u in per_step) == total.prefill_tokens
        assert sum(u.generated_tokens for u in per_step) == total.generated_tokens
        assert trace.ledger.cost(role).flops == 2 * params[role] * total.tokens
    assert trace.ledger.flops == 2 * (1_000 * 11 + 7_000 * 4 + 500 * 3)


@pytest.mark.parametrize(("alpha", "omega"), [(2.0, 1.0), (0.5, 0.5 * math.exp(-0.5))])
async def test_likelihood_ratio_reads_both_models(alpha: float, omega: float) -> None:
    engine, d, t, _ = make(table=dict.fromkeys(D, 0.9), weighting=LikelihoodRatio(alpha))
    d.logprob, t.logprob = -1.0, -1.5  # P_M / P_m = e^-0.5 per token
    trace = await engine.solve(Q)
    drafts = [s for s in trace.steps if s.author is DRAFT]
    assert [s.decision.omega for s in drafts if s.decision] == pytest.approx([omega] * 3)
    assert [s.ledger.usage[TARGET].prefill_tokens for s in drafts] == [3, 2, 3]
    if omega == 1.0:
        assert t.calls == [] and trace.text == "".join(D)


async def test_likelihood_ratio_without_draft_logprobs_is_a_config_error() -> None:
    class Blind(ScriptedModel):
        async def generate(self, *args: Any, **kwargs: Any) -> Generation:
            return replace(await super().generate(*args, **kwargs), token_logprobs=None)

    engine, *_ = make(weighting=LikelihoodRatio(1.0))
    engine.draft = Blind(D)
    with pytest.raises(ConfigError, match="likelihood-ratio"):
        await engine.solve(Q)


async def test_proposition_2_1_mixture_distribution() -> None:
    p_draft, p_target = (0.6, 0.3, 0.1), (0.1, 0.3, 0.6)
    omega: Weighting = Clip()  # ω = r = (0.8, 0.4, 0.0)
    engine = Engine(draft=ScriptedModel(sampler(p_draft)), target=ScriptedModel(sampler(p_target)))
    policy = Policy(reward=ScriptedReward(by_candidate), weighting=omega, max_steps=1, temperature=1.0)
    n, counts, from_draft = 20_000, Counter[str](), 0
    for seed in range(1, n + 1):
        (step,) = (await engine.solve(Q, policy, seed=seed)).answer_steps
        counts[step.text] += 1
        from_draft += step.author is DRAFT
    w = [CANDIDATE_REWARD[c.strip()] for c in CANDIDATES]
    nu = 1 - sum(wi * pm for wi, pm in zip(w, p_draft, strict=True))  # ν = 1 − E_{P_m}[ω] = 0.4
    # P_RSD = ω·P_m + ν·P_M = (0.52, 0.24, 0.24)
    expected = [wi * pm + nu * pt for wi, pm, pt in zip(w, p_draft, p_target, strict=True)]
    # per cell: |freq − p| < 4.5·sqrt(p(1−p)/n) ≈ 0.016 (false alarm ≈ 7e-6 per cell); the cells of
    # P_m (0.6, 0.3, 0.1) and P_M (0.1, 0.3, 0.6) lie ≥ 0.06 away, so the test tells them apart.
    for candidate, p in zip(CANDIDATES, expected, strict=True):
        assert abs(counts[candidate] / n - p) < 4.5 * math.sqrt(p * (1 - p) / n), (candidate, counts)
    assert abs(from_draft / n - (1 - nu)) < 4.5 * math.sqrt(nu * (1 - nu) / n)


async def test_reward_swapped_mid_answer_scores_from_the_next_step_with_exact_flops() -> None:
    bound, _, _, first = make(table=dict.fromkeys(D, 0.9))
    second = ScriptedReward(lambda ctx, g: 0.8, n_params=50_000, name="second")
    swapped = replace(bound.policy, reward=second)
    latest = [bound.policy]

    def swap(event: Event) -> None:
        if isinstance(event, StepStarted) and event.index == 0:
            latest[0] = swapped  # while step 0 is being drafted

    trace = await bound.engine.solve(Q, lambda index: latest[0], emit=swap)
    assert first.calls == [D[0]]  # the step in flight keeps the source it started with
    assert [s.reward_source for s in trace.steps] == ["scripted", "second", "second"]
    assert second.calls == D[1:]
    # each score is one prefill token, charged with the parameters of the model that did it
    assert trace.ledger.cost(Role.REWARD).flops == 2 * (500 * 1 + 50_000 * 2)


@pytest.mark.parametrize(
    ("text", "piece", "stops", "end"),
    [
        ("It stores values", ". It", (". ",), len("It stores values.")),  # the space goes to the next step
        ("It stores values.", " It", (". ", "\n"), len("It stores values.")),
        ("Step one.", "\n\nStep", ("\n\n",), len("Step one.\n\n")),  # a stop of line breaks is kept whole
        ("a", "b", (". ",), None),
        (
            "x",
            " ",
            (" ",),
            len("x "),
        ),  # a stop of spaces alone stays whole (else the step would end before it)
    ],
)
def test_a_step_ends_after_its_stop_less_the_stops_trailing_spaces(
    text: str, piece: str, stops: tuple[str, ...], end: int | None
) -> None:
    assert step_end(text, piece, stops) == end


SENTENCE = (". ", "? ", "! ", "\n")


@pytest.mark.parametrize(
    ("text", "piece", "end"),
    [
        ("1", ". Learn", None),  # a list number alone: the step goes on
        ("", "12. ", None),
        ("b", ". ", None),
        ("Use a tool, e.g", ". a", None),
        ("He has 42", ". Then", len("He has 42.")),  # a sentence that ends in a number ends
        ("1. Learn ten words a day", ". Then", len("1. Learn ten words a day.")),
        ("1", "? ", len("1?")),  # only the "." of a sentence stop is passed over
    ],
)
def test_a_sentence_step_does_not_end_at_a_list_number_or_an_abbreviation(
    text: str, piece: str, end: int | None
) -> None:
    assert step_end(text, piece, SENTENCE) == end
