"""The free step features and the learned step scorer (`draft-scorer`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rsdchat.core.errors import ConfigError
from rsdchat.core.types import Context, Generation, Message
from rsdchat.plugins import RewardContext, reward_plugins
from rsdchat.rewards import make_reward
from rsdchat.rewards.features import FEATURES, step_features
from rsdchat.rewards.learned import LearnedScorer, ScorerModel, load_scorer, scorer_path

CONTEXT = Context((Message("user", "Tom has 48 apples and gives away 15. How many are left?"),), "First.\n\n")
PIECES = ("He", " has", " 48", " -", " 15", " =", " 33", " apples", " and", " 1200", ".\n\n")
LOGPROBS = (-0.1, -0.2, -0.05, -0.5, -0.3, -0.1, -2.5, -0.1, -0.2, -1.0, -0.01)
ENTROPIES = (0.3, 0.2, 0.1, 1.5, 0.4, 0.2, 2.0, 0.1, 0.3, 1.2, 0.05)
STEP = Generation("He has 48 - 15 = 33 apples and 1200.\n\n", "step", None, LOGPROBS, PIECES, ENTROPIES)


def test_features_look_at_numbers_uncertainty_and_grounding() -> None:
    values = step_features(CONTEXT, STEP)
    assert set(values) == set(FEATURES)
    assert values["min_logprob"] == -2.5 and values["q10_logprob"] == -1.0
    assert values["math_min_logprob"] == -2.5  # " 33" is a number token
    assert values["math_max_entropy"] == 2.0 and values["max_entropy"] == 2.0
    assert values["wrong_equations"] == 0 and values["checked_equations"] == 1
    assert values["ungrounded"] == 1  # 1200 comes from nowhere; 48 and 15 from the question, 33 computed
    assert values["position"] == pytest.approx(math.log(2)) and values["cut"] == 0.0
    wrong = Generation(
        "So 48 - 15 = 23.\n\n", "length", None, (-0.1,) * 4, ("So", " 48", " -", " 23"), (0.1,) * 4
    )
    assert (
        step_features(CONTEXT, wrong)["wrong_equations"] == 1 and step_features(CONTEXT, wrong)["cut"] == 1.0
    )
    bare = step_features(CONTEXT, Generation("Done.\n\n", "step"))  # no token data: neutral values
    assert bare["mean_logprob"] == 0.0 and bare["numbers"] == 0


def test_the_shipped_scorer_loads_and_says_what_it_was_trained_on() -> None:
    model = load_scorer()
    assert set(model.features) <= set(FEATURES)
    assert {"trained_on", "steps", "bad_steps", "cv_auc", "command"} <= set(model.about)
    assert 0.0 < model.about["cv_auc"] <= 1.0
    assert "draft-scorer" in reward_plugins()
    assert f"AUC {model.about['cv_auc']:.2f}" in reward_plugins()["draft-scorer"].description


async def test_the_scorer_gives_a_probability_of_a_fine_step() -> None:
    source = make_reward("draft-scorer", RewardContext(None, None, {}))
    assert isinstance(source, LearnedScorer) and source.bounds == (0.0, 1.0) and source.n_params == 0
    score = await source.score(CONTEXT, STEP)
    assert 0.0 < score.reward < 1.0 and score.usage.tokens == 0
    with pytest.raises(ConfigError, match="draft-scorer needs token log-probabilities"):
        await source.score(CONTEXT, Generation("x\n\n", "step"))


def test_a_model_pushes_towards_bad_where_its_weights_say() -> None:
    model = ScorerModel(("min_logprob",), (-1.0,), (1.0,), (-2.0,), 0.0)  # a low min logprob is bad
    sure, unsure = dict.fromkeys(FEATURES, 0.0), dict.fromkeys(FEATURES, 0.0)
    sure["min_logprob"], unsure["min_logprob"] = -0.1, -4.0
    assert model.p_bad(sure) < 0.5 < model.p_bad(unsure)
    assert ScorerModel.from_dict(model.to_dict(), "x") == model


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is corrupt \\(not JSON"),
        (json.dumps({"version": 1, "features": ["nope"], "mean": [0], "scale": [1], "weights": [1],
                     "bias": 0}), "unknown feature 'nope'"),
        (json.dumps({"version": 1, "features": ["min_logprob"], "mean": [0], "scale": [0], "weights": [1],
                     "bias": 0}), "positive-scale"),
        (json.dumps({"version": 9}), "version 9"),
    ],
)  # fmt: skip
def test_a_corrupt_or_missing_scorer_file_is_one_line_naming_it(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "scorer.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        load_scorer(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_scorer(tmp_path / "absent.json")
    assert scorer_path().name == "step-scorer.json"
