"""Weighting functions ω (paper Table 1, §2.4) and `make_weighting`."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rsdchat.core.errors import ConfigError
from rsdchat.core.weighting import (
    WEIGHTINGS,
    BinaryStep,
    Clip,
    Constant,
    Hybrid,
    LikelihoodRatio,
    Logistic,
    Sigmoidal,
    Signals,
    Weighting,
    make_weighting,
    weighting_from_dict,
)

LOGISTIC_HALF = 1 / (1 + math.exp(-10 * 0.5))  # α = 10, r − δ = 0.5


@pytest.mark.parametrize(
    ("weighting", "signals", "expected"),
    [
        # Constant: the reward is ignored.
        (Constant(0.3), Signals(-5.0), 0.3),
        (Constant(0.3), Signals(99.0), 0.3),
        (Constant(0.0), Signals(1.0), 0.0),
        (Constant(1.0), Signals(0.0), 1.0),
        # Binary step 1(r ≥ δ): r == δ is accepted.
        (BinaryStep(0.7), Signals(0.7), 1.0),
        (BinaryStep(0.7), Signals(math.nextafter(0.7, 0.0)), 0.0),
        (BinaryStep(0.7), Signals(0.69), 0.0),
        (BinaryStep(0.0), Signals(0.0), 1.0),
        (BinaryStep(0.0), Signals(-1e-300), 0.0),
        # Clip to [0, 1].
        (Clip(), Signals(-3.0), 0.0),
        (Clip(), Signals(0.0), 0.0),
        (Clip(), Signals(0.42), 0.42),
        (Clip(), Signals(1.0), 1.0),
        (Clip(), Signals(7.5), 1.0),
        # Sigmoidal max(0, r/(1+r)); r ≤ 0 (including r < −1, where r/(1+r) > 0) gives 0.
        (Sigmoidal(), Signals(0.0), 0.0),
        (Sigmoidal(), Signals(1.0), 0.5),
        (Sigmoidal(), Signals(3.0), 0.75),
        (Sigmoidal(), Signals(-0.5), 0.0),
        (Sigmoidal(), Signals(-2.0), 0.0),
        (Sigmoidal(), Signals(1e300), 1.0),
        # Logistic 1/(1+e^{−α(r−δ)}): ½ at r = δ.
        (Logistic(10.0, 0.7), Signals(0.7), 0.5),
        (Logistic(10.0, 0.7), Signals(1.2), LOGISTIC_HALF),
        (Logistic(10.0, 0.7), Signals(0.2), 1 - LOGISTIC_HALF),
        # Likelihood ratio min(1, α·P_M/P_m) on per-token probabilities.
        (LikelihoodRatio(1.0), Signals(0.0, -1.0, -1.0), 1.0),
        (LikelihoodRatio(1.0), Signals(0.0, -1.0, -2.0), math.exp(-1.0)),
        (LikelihoodRatio(0.5), Signals(0.0, -2.0, -2.0), 0.5),
        (LikelihoodRatio(2.0), Signals(0.0, -1.0, -0.5), 1.0),
        (LikelihoodRatio(1.0), Signals(0.0, -1.0, 5000.0), 1.0),  # exp capped, no overflow
        (LikelihoodRatio(1.0), Signals(0.0, 0.0, -5000.0), 0.0),
        # Hybrid min(1, β·r·P_M/P_m).
        (Hybrid(1.0), Signals(0.5, -1.0, -1.0), 0.5),
        (Hybrid(2.0), Signals(0.2, -1.0, -1.0 + math.log(1.5)), 0.6),
        (Hybrid(1.0), Signals(0.9, -1.0, 0.0), 1.0),
        (Hybrid(1.0), Signals(-0.4, -1.0, -1.0), 0.0),
        (Hybrid(1e300), Signals(1e300, -1.0, 5000.0), 1.0),  # inf before the clip
    ],
)
def test_values(weighting: Weighting, signals: Signals, expected: float) -> None:
    assert weighting(signals) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("reward", [-1e308, -1e6, -71.0, 71.0, 1e6, 1e308])
@pytest.mark.parametrize("alpha", [10.0, 1e6, 1e300])
def test_logistic_extremes_do_not_overflow(alpha: float, reward: float) -> None:
    omega = Logistic(alpha, 0.7)(Signals(reward))
    assert omega == (1.0 if reward > 0.7 else 0.0)


@pytest.mark.parametrize("weighting", [LikelihoodRatio(1.0), Hybrid(1.0)])
@pytest.mark.parametrize("signals", [Signals(0.5), Signals(0.5, -1.0), Signals(0.5, None, -1.0)])
def test_likelihood_weightings_need_both_logprobs(weighting: Weighting, signals: Signals) -> None:
    assert weighting.needs_logprobs
    with pytest.raises(ValueError, match="log-probabilities"):
        weighting(signals)


PARAMS = {"delta": 0.5, "alpha": 10.0, "p": 0.5, "beta": 1.0}


@pytest.mark.parametrize("name", ["binary", "constant", "clip", "sigmoidal", "logistic"])
def test_reward_weightings_need_no_logprobs(name: str) -> None:
    weighting = make_weighting(name, **PARAMS)
    assert not weighting.needs_logprobs
    assert 0.0 <= weighting(Signals(0.6)) <= 1.0  # callable without logprobs


REWARD_WEIGHTINGS = [
    BinaryStep(0.7),
    BinaryStep(-2.0),
    Constant(0.3),
    Clip(),
    Logistic(10.0, 0.7),
    Logistic(0.37, -3.0),
    Logistic(1e4, 0.0),
    LikelihoodRatio(0.8),
    Hybrid(1.3),
    Hybrid(40.0),
]
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(
    index=st.integers(0, len(REWARD_WEIGHTINGS) - 1),
    a=finite,
    b=finite,
    draft=st.floats(-20.0, 0.0),
    target=st.floats(-20.0, 0.0),
)
def test_monotone_non_decreasing_in_reward(
    index: int, a: float, b: float, draft: float, target: float
) -> None:
    weighting = REWARD_WEIGHTINGS[index]
    low, high = sorted((a, b))
    w_low = weighting(Signals(low, draft, target))
    w_high = weighting(Signals(high, draft, target))
    assert 0.0 <= w_low <= w_high <= 1.0


@given(a=finite, b=finite)
def test_sigmoidal_monotone_within_rounding(a: float, b: float) -> None:
    low, high = sorted((a, b))
    w_low, w_high = Sigmoidal()(Signals(low)), Sigmoidal()(Signals(high))
    assert 0.0 <= w_low <= 1.0 and 0.0 <= w_high <= 1.0
    assert w_low <= w_high


def test_sigmoidal_monotone_at_one_ulp() -> None:
    low = 15.692043022978442
    high = math.nextafter(low, math.inf)
    assert Sigmoidal()(Signals(low)) <= Sigmoidal()(Signals(high))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("logistic", {"alpha": -5.0}), ("logistic", {"alpha": 0.0}), ("hybrid", {"beta": -1.0})],
)
def test_negative_slope_rejected(name: str, kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="must be positive"):
        make_weighting(name, **{**PARAMS, **kwargs})
    with pytest.raises(ConfigError, match="must be positive"):  # the class itself checks
        WEIGHTINGS[name](**{k: v for k, v in {**PARAMS, **kwargs}.items() if k in WEIGHTINGS[name].params()})


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("binary", BinaryStep),
        ("constant", Constant),
        ("clip", Clip),
        ("sigmoidal", Sigmoidal),
        ("logistic", Logistic),
        ("likelihood-ratio", LikelihoodRatio),
        ("hybrid", Hybrid),
    ],
)
def test_make_weighting_by_name(name: str, kind: type) -> None:
    weighting = make_weighting(name, delta=0.6, alpha=4.0, p=0.25, beta=2.0)
    assert isinstance(weighting, kind)
    assert weighting.name == name
    assert name in WEIGHTINGS
    assert weighting.describe()


def test_make_weighting_passes_parameters() -> None:
    assert make_weighting("binary", delta=0.6) == BinaryStep(0.6)
    assert make_weighting("constant", delta=0.6, p=0.25) == Constant(0.25)
    assert make_weighting("logistic", delta=0.6, alpha=4.0) == Logistic(4.0, 0.6)
    assert make_weighting("likelihood-ratio", delta=0.6, alpha=4.0) == LikelihoodRatio(4.0)
    assert make_weighting("hybrid", delta=0.6, beta=2.0) == Hybrid(2.0)
    assert make_weighting("binary", delta=0.6).describe() == "binary δ=0.6"
    assert make_weighting("logistic", alpha=4.0, delta=0.6).describe() == "logistic α=4 δ=0.6"
    assert make_weighting("clip").describe() == "clip"


def test_a_missing_parameter_is_named() -> None:
    with pytest.raises(ConfigError, match=r"the logistic weighting needs α \(alpha\)"):
        make_weighting("logistic", delta=0.5)


def test_the_registry_derives_from_each_class() -> None:
    assert list(WEIGHTINGS) == [
        "binary",
        "constant",
        "clip",
        "sigmoidal",
        "logistic",
        "likelihood-ratio",
        "hybrid",
    ]
    assert {name: cls.params() for name, cls in WEIGHTINGS.items()} == {
        "binary": ("delta",),
        "constant": ("p",),
        "clip": (),
        "sigmoidal": (),
        "logistic": ("alpha", "delta"),
        "likelihood-ratio": ("alpha",),
        "hybrid": ("beta",),
    }
    for name in WEIGHTINGS:
        weighting = make_weighting(name, **PARAMS)
        assert weighting.name == name
        assert weighting_from_dict(weighting.to_dict()) == weighting
        assert weighting.threshold == (0.5 if "delta" in weighting.params() else None)


@pytest.mark.parametrize("name", ["step", "Binary", "", "logistic "])
def test_unknown_name_lists_valid_ones(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_weighting(name, delta=0.5)
    message = str(info.value)
    assert repr(name) in message
    assert all(valid in message for valid in WEIGHTINGS)
    assert "\n" not in message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    ("label", "name"), [("delta", "binary"), ("alpha", "logistic"), ("p", "constant"), ("beta", "hybrid")]
)
def test_non_finite_parameters_are_config_errors(label: str, name: str, value: float) -> None:
    with pytest.raises(ConfigError, match=label):
        make_weighting(name, **{**PARAMS, label: value})


@pytest.mark.parametrize("p", [-0.01, 1.01, -1.0, 2.0])
def test_constant_p_outside_unit_interval(p: float) -> None:
    with pytest.raises(ConfigError, match=r"p must be in \[0, 1\]"):
        make_weighting("constant", p=p)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_constant_p_bounds_allowed(p: float) -> None:
    assert make_weighting("constant", p=p)(Signals(0.1)) == p
