"""Reward sources without reward-model weights, and `make_reward`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import pytest

from rsdchat.core.errors import ConfigError
from rsdchat.core.protocols import Logprobs, RewardSource, Score, StepGenerator
from rsdchat.core.types import Context, Generation, Message, ModelInfo, StepRequest, Usage
from rsdchat.plugins import RewardContext, reward_plugins
from rsdchat.rewards import Product, make_reward
from rsdchat.rewards.sources import Arithmetic, DraftConfidence, Judge, TargetLogprob
from rsdchat.testing import ScriptedModel

BUILT_IN = (
    "arithmetic", "cascade", "draft-confidence", "draft-scorer", "judge", "target-logprob", "target-min-prob"
)  # fmt: skip


def models(draft: StepGenerator | None = None, target: StepGenerator | None = None) -> RewardContext:
    return RewardContext(draft, target, {})


CONTEXT = Context((Message("system", "be brief"), Message("user", "What is 6 times 7?")), "First step.\n\n")
STEP = Generation("So 6 x 7 = 42.\n\n", "step", Usage(3, 5), (-0.1, -0.3, -0.2))


class NoLogprobs:
    """A generator that cannot score text (a black-box endpoint)."""

    info = ModelInfo("blind", 10)

    async def generate(self, context: Context, request: StepRequest, on_token: object = None) -> Generation:
        return Generation("", "eos")


class JudgeModel(ScriptedModel):
    """Answers the judge with chosen log-probabilities of 'Yes' and 'No' (one token each, or two)."""

    def __init__(self, yes: tuple[float, ...], no: tuple[float, ...]) -> None:
        super().__init__([], n_params=7_000)
        self.table = {"Yes": yes, "No": no}
        self.asked: list[tuple[Context, str]] = []

    async def logprobs(self, context: Context, continuation: str) -> Logprobs:
        self.asked.append((context, continuation))
        return Logprobs(self.table[continuation], Usage(prefill_tokens=10, seconds=0.5))


@dataclass
class Fixed:
    reward: float
    usage: Usage = field(default_factory=Usage)
    target_logprob: float | None = None
    detail: str = ""
    name: str = "fixed"
    kind: Literal["process", "outcome"] = "process"
    default_delta: float = 0.5
    bounds: tuple[float, float] | None = (0.0, 1.0)
    n_params: int = 0

    async def score(self, context: Context, step: Generation) -> Score:
        return Score(self.reward, Usage(**vars(self.usage)), self.target_logprob, self.detail)

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("target-logprob", TargetLogprob),
        ("draft-confidence", DraftConfidence),
        ("judge", Judge),
        ("arithmetic", Arithmetic),
    ],
)
def test_make_reward_by_name(spec: str, kind: type) -> None:
    source = make_reward(spec, models(ScriptedModel([]), ScriptedModel([], n_params=7_000)))
    assert isinstance(source, kind) and isinstance(source, RewardSource)
    assert source.name == spec and spec in reward_plugins() and source.bounds == (0.0, 1.0)
    assert 0.0 < source.default_delta <= 1.0  # every source scores in [0, 1]; δ is tuned per source
    assert source.n_params == (7_000 if spec in ("target-logprob", "judge") else 0)


@pytest.mark.parametrize("spec", ["arithmetic*draft-confidence", " arithmetic * draft-confidence "])
def test_make_reward_product(spec: str) -> None:
    source = make_reward(spec, models())
    assert isinstance(source, Product) and source.bounds == (0.0, 1.0)
    assert [type(p) for p in source.parts] == [Arithmetic, DraftConfidence]
    assert source.name == "arithmetic*draft-confidence"
    assert source.default_delta == pytest.approx(1.0 * 0.88) and source.n_params == 0  # δ of each, multiplied


def test_product_of_three_takes_the_largest_model() -> None:
    target = ScriptedModel([], n_params=7_000)
    source = make_reward("judge*target-logprob*arithmetic", models(None, target))
    assert isinstance(source, Product) and len(source.parts) == 3
    assert source.default_delta == pytest.approx(0.5 * 0.75 * 1.0)  # judge, target-logprob, arithmetic
    assert source.n_params == 7_000


@pytest.mark.parametrize(("spec", "bad"), [("prm", "'prm'"), ("arithmetic*bogus", "'bogus'")])
def test_unknown_reward_lists_valid_names(spec: str, bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_reward(spec, models())
    message = str(info.value)
    assert f"unknown reward {bad}" in message and "\n" not in message
    assert all(name in message for name in BUILT_IN)


def test_built_in_sources_are_entry_points_like_any_plugin() -> None:
    found = reward_plugins()
    assert list(found)[: len(BUILT_IN)] == list(BUILT_IN)  # rsdchat's own first, no plugin replaces them
    assert all(found[name].description for name in BUILT_IN)
    assert {name: found[name].cost for name in BUILT_IN} == {
        "arithmetic": "free",
        "cascade": "target, grey zone only",
        "draft-confidence": "free",
        "draft-scorer": "free",
        "judge": "target",
        "target-logprob": "target",
        "target-min-prob": "target",
    }


@pytest.mark.parametrize(
    "spec", ["target-logprob", "target-min-prob", "cascade", "judge", "arithmetic*judge"]
)
def test_target_rewards_need_a_logprob_target(spec: str) -> None:
    with pytest.raises(ConfigError, match="needs a target"):
        make_reward(spec, models())
    with pytest.raises(ConfigError, match="log-probabilities"):
        make_reward(spec, models(None, NoLogprobs()))


async def test_draft_confidence_is_exp_mean_logprob() -> None:
    score = await DraftConfidence().score(CONTEXT, STEP)
    assert score.reward == pytest.approx(math.exp(-0.2))
    assert score.usage.tokens == 0  # free


@pytest.mark.parametrize("logprobs", [None, ()])
async def test_draft_confidence_without_logprobs(logprobs: tuple[float, ...] | None) -> None:
    with pytest.raises(ConfigError, match="draft-confidence"):
        await DraftConfidence().score(CONTEXT, Generation("x\n\n", "step", token_logprobs=logprobs))


async def test_product_multiplies_and_sums_usage() -> None:
    first = Fixed(0.5, Usage(1, 2, 0.25), target_logprob=-0.7, detail="one")
    second = Fixed(0.8, Usage(10, 0, 0.5), detail="two")
    third = Fixed(0.25, Usage(100, 3, 1.0), target_logprob=-0.2)
    score = await Product((first, second, third)).score(CONTEXT, STEP)
    assert score.reward == pytest.approx(0.5 * 0.8 * 0.25)
    assert (score.usage.prefill_tokens, score.usage.generated_tokens) == (111, 5)
    assert score.usage.seconds == pytest.approx(1.75)
    assert score.target_logprob == -0.2 and score.detail == "one; two"
    assert first.usage == Usage(1, 2, 0.25)  # parts' own scores are not mutated
    assert (await Product((second, first)).score(CONTEXT, STEP)).target_logprob == -0.7


async def test_product_vetoes_a_confident_wrong_step() -> None:
    source = make_reward("arithmetic*draft-confidence", models())
    wrong = Generation("So 6 x 7 = 48.\n\n", "step", token_logprobs=(-0.01,) * 4)
    assert (await source.score(CONTEXT, wrong)).reward == 0.0
    assert (await source.score(CONTEXT, STEP)).reward == pytest.approx(math.exp(-0.2))


async def test_target_logprob_against_scripted_model() -> None:
    target = ScriptedModel([], logprob=-0.25, n_params=7_000)
    source = TargetLogprob(target)
    score = await source.score(CONTEXT, STEP)
    assert score.reward == pytest.approx(math.exp(-0.25)) and score.target_logprob == pytest.approx(-0.25)
    n_tokens = len(STEP.text.split(" "))  # ScriptedModel scores one token per space-separated piece
    assert (score.usage.prefill_tokens, score.usage.generated_tokens) == (n_tokens, 0)
    assert source.n_params == 7_000 and 0.0 < score.reward <= 1.0


@pytest.mark.parametrize(
    ("yes", "no", "expected"),
    [
        ((math.log(0.3),), (math.log(0.1),), 0.75),
        ((math.log(0.2),), (math.log(0.2),), 0.5),
        ((-1000.0,), (-1001.0,), 1 / (1 + math.exp(-1.0))),  # both underflow alone: normalised first
        ((-2.0, -1.0), (-1.0,), 1 / (1 + math.exp(2.0))),  # multi-token answers: whole-sequence P
        ((0.0,), (-800.0,), 1.0),
    ],
)
async def test_judge_normalises_yes_against_no(
    yes: tuple[float, ...], no: tuple[float, ...], expected: float
) -> None:
    model = JudgeModel(yes, no)
    score = await Judge(model).score(CONTEXT, STEP)
    assert score.reward == pytest.approx(expected, rel=1e-12)
    assert (score.usage.prefill_tokens, score.usage.seconds) == (20, pytest.approx(1.0))


async def test_judge_asks_about_the_step_in_context() -> None:
    model = JudgeModel((math.log(0.3),), (math.log(0.1),))
    await Judge(model).score(CONTEXT, STEP)
    assert [answer for _, answer in model.asked] == ["Yes", "No"]
    judge_context = model.asked[0][0]
    assert judge_context.response == "" and judge_context.messages[0].role == "system"
    prompt = judge_context.question
    assert "What is 6 times 7?" in prompt and "First step." in prompt and "So 6 x 7 = 42." in prompt
    assert "be brief" not in prompt
    first = await Judge(model).score(Context(CONTEXT.messages), STEP)
    assert "(none)" in model.asked[-1][0].question and first.reward == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("text", "reward", "detail"),
    [
        ("So 6 x 7 = 48.\n\n", 0.0, "1 of 1 equations wrong"),
        ("12 x 3 = 36 and 5 + 5 = 11.\n\n", 0.5, "1 of 2 equations wrong"),
        ("So 6 x 7 = 42.\n\n", 1.0, "1 equation checks out"),
        ("6 x 7 = 42 and 5 + 5 = 10.\n\n", 1.0, "2 equations check out"),
        ("No sums in this step.\n\n", 1.0, ""),
    ],
)
async def test_arithmetic_reward(text: str, reward: float, detail: str) -> None:
    score = await Arithmetic().score(CONTEXT, Generation(text, "step"))
    assert score.reward == reward and score.detail == detail
    assert score.usage.tokens == 0


async def test_arithmetic_reward_of_a_wrong_equation_is_below_one() -> None:
    score = await Arithmetic().score(CONTEXT, Generation("Then 2 + 2 = 5.\n\n", "step"))
    assert score.reward < 1.0
