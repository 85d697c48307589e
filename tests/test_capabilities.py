"""What a policy asks of the models and the reward is checked before any work, the same way for all.

A generator declares the request features it honours (`features`); a reward that decides each
step itself declares the δ band under which the binary ω replays its decision (`decision_band`).
`Engine.check` refuses, in one line naming the setting and the backend, what would otherwise be
ignored or misread.
"""

from __future__ import annotations

import pytest

from rsdchat.core.engine import Engine
from rsdchat.core.errors import ConfigError
from rsdchat.core.policy import Mode, Policy
from rsdchat.core.protocols import PLAIN, Feature, features
from rsdchat.core.types import Context, Generation, Message, ModelInfo, StepRequest
from rsdchat.core.weighting import BinaryStep, Logistic
from rsdchat.rewards.cascade import Cascade
from rsdchat.testing import ScriptedModel, ScriptedReward

UNIT = ScriptedReward(lambda context, step: 0.9)
STEPS = ["2 + 2 = 4.\n\n", "\\boxed{4}"]


def engine(*, draft: frozenset[Feature] = frozenset(Feature), target: frozenset[Feature] = PLAIN) -> Engine:
    return Engine(
        draft=ScriptedModel(STEPS, name="small", features=draft),
        target=ScriptedModel(STEPS, name="big", features=target),
    )


def refusal(engine: Engine, policy: Policy) -> str:
    with pytest.raises(ConfigError) as caught:
        engine.check(policy)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_reuse_draft_is_refused_by_a_target_that_cannot_check_a_proposal() -> None:
    message = refusal(engine(target=PLAIN), Policy(reward=UNIT, reuse_draft=True))
    assert message == (
        "setting reuse_draft: the scripted backend's target (big) cannot check a rejected draft step; "
        "turn reuse_draft off"
    )


def test_reuse_draft_is_taken_by_a_target_that_declares_it() -> None:
    engine(target=frozenset(Feature)).check(Policy(reward=UNIT, reuse_draft=True))


@pytest.mark.parametrize("mode", [Mode.TARGET_ONLY, Mode.DRAFT_ONLY])
def test_reuse_draft_asks_nothing_where_no_draft_step_is_rejected(mode: Mode) -> None:
    engine(target=PLAIN).check(Policy(mode=mode, reward=None, reuse_draft=True))


def test_reuse_draft_is_greedy_only() -> None:
    message = refusal(
        engine(target=frozenset(Feature)), Policy(reward=UNIT, reuse_draft=True, temperature=0.7)
    )
    assert message.startswith("setting reuse_draft: a rejected draft step is checked greedily only")


@pytest.mark.parametrize("role", ["draft", "target"])
def test_sampling_is_refused_by_a_model_that_writes_greedily_only(role: str) -> None:
    greedy: frozenset[Feature] = frozenset()
    models = engine(**{role: greedy})  # type: ignore[arg-type]
    name = "small" if role == "draft" else "big"
    message = refusal(models, Policy(reward=UNIT, temperature=0.7))
    where = f"the scripted backend's {role} ({name})"
    assert message == f"setting temperature: {where} writes greedy steps only; set temperature 0"
    models.check(Policy(reward=UNIT, temperature=0.0))


def test_only_the_models_that_write_are_asked() -> None:
    models = engine(draft=frozenset(), target=PLAIN)  # the draft writes greedily only
    models.check(Policy(mode=Mode.TARGET_ONLY, temperature=0.7))


class Undeclared:
    """A generator from before features were declared: it honours the plain ones."""

    info = ModelInfo("old", 1)

    async def generate(self, context: Context, request: StepRequest, on_token: object = None) -> Generation:
        return Generation("", "eos")


def test_a_generator_that_declares_nothing_honours_the_plain_features() -> None:
    assert features(Undeclared()) == PLAIN == frozenset({Feature.SAMPLING})
    models = Engine(draft=ScriptedModel(STEPS), target=Undeclared())
    models.check(Policy(reward=UNIT, temperature=0.7))
    assert "the target (old) cannot check" in refusal(models, Policy(reward=UNIT, reuse_draft=True))


def test_the_backends_declare_what_they_honour() -> None:
    pytest.importorskip("rsdchat_openai")
    from rsdchat_openai.generator import HttpGenerator, HttpLogprobGenerator

    assert HttpGenerator.features == HttpLogprobGenerator.features == frozenset({Feature.SAMPLING})
    llamacpp = pytest.importorskip("rsdchat_llamacpp.generator")
    speculative = pytest.importorskip("rsdchat_llamacpp.speculative")
    assert llamacpp.LlamaModel.features == frozenset({Feature.SAMPLING, Feature.PROPOSAL})
    assert speculative.SpeculativeModel.features == frozenset()  # greedy only, no proposal


async def test_a_refused_policy_is_refused_before_any_step_is_written() -> None:
    models = engine(target=PLAIN)
    with pytest.raises(ConfigError, match="setting reuse_draft"):
        await models.solve([Message("user", "What is 2 + 2?")], Policy(reward=UNIT, reuse_draft=True))
    assert isinstance(models.draft, ScriptedModel) and not models.draft.calls


# -- a reward that decides each step itself --------------------------------------------


def cascade(low: float = 0.4, high: float = 0.6) -> Cascade:
    free, check = (
        ScriptedReward(lambda c, s: 0.5, name="free"),
        ScriptedReward(lambda c, s: 1.0, name="check"),
    )
    return Cascade(free, check, low=low, high=high, passing=0.1)


@pytest.mark.parametrize("delta", [0.41, 0.5, 0.6])
def test_the_cascade_takes_a_delta_in_its_band(delta: float) -> None:
    engine().check(Policy(reward=cascade(), weighting=BinaryStep(delta)))


def test_the_cascade_default_delta_is_in_its_band() -> None:
    source = cascade()
    engine().check(Policy(reward=source, weighting=BinaryStep(source.default_delta)))


@pytest.mark.parametrize("delta", [0.0, 0.3, 0.4, 0.61, 1.0])
def test_the_cascade_refuses_a_delta_that_would_not_replay_its_decision(delta: float) -> None:
    message = refusal(engine(), Policy(reward=cascade(), weighting=BinaryStep(delta)))
    assert message == (
        "setting delta: reward cascade decides each step itself; "
        "only the binary weighting with δ in (0.4, 0.6] keeps the steps it keeps"
    )


def test_the_cascade_refuses_a_graded_weighting() -> None:
    message = refusal(engine(), Policy(reward=cascade(), weighting=Logistic(10.0, 0.5)))
    assert message.startswith("setting weighting: reward cascade decides each step itself")


def test_a_cascade_without_grey_zone_takes_its_one_threshold() -> None:
    source = cascade(0.5, 0.5)
    engine().check(Policy(reward=source, weighting=BinaryStep(0.5)))
    assert "with δ = 0.5 keeps" in refusal(engine(), Policy(reward=source, weighting=BinaryStep(0.6)))


async def test_the_binary_weighting_in_the_band_keeps_what_the_cascade_keeps() -> None:
    """Free scores across the zones, a check that passes or fails: accepted ⇔ the cascade keeps."""
    for free in (0.1, 0.39, 0.4, 0.5, 0.59, 0.6, 0.9):
        for verdict in (0.05, 0.5):
            source = Cascade(
                ScriptedReward(lambda c, s, v=free: v, name="free"),
                ScriptedReward(lambda c, s, v=verdict: v, name="check"),
                low=0.4,
                high=0.6,
                passing=0.1,
            )
            keeps = free >= 0.6 or (0.4 <= free < 0.6 and verdict >= 0.1)
            for delta in (0.41, 0.5, 0.6):
                models = Engine(draft=ScriptedModel(STEPS[:1]), target=ScriptedModel(STEPS[:1]))
                policy = Policy(reward=source, weighting=BinaryStep(delta), max_steps=1)
                models.check(policy)
                trace = await models.solve([Message("user", "What is 2 + 2?")], policy)
                assert trace.steps[0].accepted is keeps, (free, verdict, delta)
