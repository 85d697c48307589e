"""Fitting the reward head to the draft's hidden states at labelled steps.

The head is a linear probe on the standardised hidden state (a logistic regression, L2
penalty, classes weighted to balance), written in the two-class ReLU form of the PRM
(`head.probe_head`). Labelled steps are few — a draft's bad steps are rare — so the choice
that matters is the penalty, made by the AUC out of fold: folds by question (a question's
steps are never split), the penalty with the best out-of-fold AUC wins. The out-of-fold
scores also calibrate the probability (Platt: P(good) = sigmoid(a·s + b)) and give the
default δ (the threshold that best separates good from bad steps out of fold, Youden's J).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from rsdchat.prm.head import PrmHead, probe_head

Array = npt.NDArray[np.float64]
PENALTIES = (1.0, 10.0, 100.0, 1000.0, 10000.0)


def auc(scores: Sequence[float], bad: Sequence[int]) -> float:
    """P(a good step scores higher than a bad one), ties half; NaN without both kinds."""
    s = np.asarray(scores, dtype=np.float64)
    b = np.asarray(bad, dtype=bool)
    good_scores, bad_scores = s[~b], s[b]
    if not len(good_scores) or not len(bad_scores):
        return float("nan")
    wins = (good_scores[:, None] > bad_scores[None, :]).sum() + 0.5 * (
        good_scores[:, None] == bad_scores[None, :]
    ).sum()
    return float(wins / (len(good_scores) * len(bad_scores)))


def fit_logistic(x: Array, y: Array, l2: float, *, balance: bool = True) -> tuple[Array, float]:
    """Logistic regression by Newton's method; (weights, bias) for P(y = 1)."""
    n, d = x.shape
    positives = max(1.0, float(y.sum()))
    if balance:
        weight = np.where(y == 1, n / (2 * positives), n / (2 * max(1.0, n - positives)))
    else:
        weight = np.ones(n)
    design = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    penalty = np.diag([l2] * d + [0.0])
    for _ in range(50):
        p = 1 / (1 + np.exp(-np.clip(design @ theta, -50, 50)))
        gradient = design.T @ (weight * (p - y)) + penalty @ theta
        hessian = design.T @ (design * (weight * p * (1 - p))[:, None]) + penalty
        hessian += 1e-9 * np.eye(d + 1)  # separable labels (a few questions) stay solvable
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta[:d], float(theta[d])


@dataclass(frozen=True)
class Probe:
    """A fitted probe: z = weights · (h − mean) / scale + bias (large z: good step)."""

    weights: Array
    bias: float
    mean: Array
    scale: Array

    def scores(self, states: Array) -> Array:
        return np.asarray(((states - self.mean) / self.scale) @ self.weights + self.bias)


def fit_probe(states: Array, good: Array, l2: float) -> Probe:
    mean, scale = states.mean(axis=0), states.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    weights, bias = fit_logistic((states - mean) / scale, good, l2)
    return Probe(weights, bias, mean, scale)


def folds_of(groups: Sequence[str], folds: int, seed: int = 0) -> list[int]:
    """A fold per item, by group (a question's steps stay together), groups shuffled by `seed`."""
    names = sorted(set(groups))
    random.Random(seed).shuffle(names)
    fold_of = {name: i % folds for i, name in enumerate(names)}
    return [fold_of[g] for g in groups]


def out_of_fold(states: Array, good: Array, folds: list[int], l2: float) -> Array:
    """Each step's probe score from a probe fitted without its question."""
    scores = np.zeros(len(good))
    for fold in sorted(set(folds)):
        test = np.array([f == fold for f in folds])
        scores[test] = fit_probe(states[~test], good[~test], l2).scores(states[test])
    return scores


@dataclass(frozen=True)
class Trained:
    head: PrmHead
    cv_auc: float  # of the chosen penalty, out of fold
    penalties: dict[float, float]  # penalty -> out-of-fold AUC
    oof: Array  # calibrated out-of-fold P(good) per step


def train_head(
    states: Array, good: Array, groups: Sequence[str], about: dict[str, Any], *, folds: int = 5
) -> Trained:
    """Choose the penalty out of fold, calibrate, fit on everything; the head says how it was made."""
    if good.min() == good.max():
        raise ValueError("the labelled steps are all of one kind: label more questions")
    fold_ids = folds_of(groups, min(folds, len(set(groups))))
    bad = (1 - good).astype(int)
    scored = {l2: out_of_fold(states, good, fold_ids, l2) for l2 in PENALTIES}
    penalties = {l2: auc(list(s), list(bad)) for l2, s in scored.items()}
    best = max(PENALTIES, key=lambda l2: (penalties[l2], l2))
    a, b = fit_logistic(scored[best].reshape(-1, 1), good, 0.0, balance=False)  # Platt, true base rate
    slope, offset = float(a[0]), b
    oof = 1 / (1 + np.exp(-(slope * scored[best] + offset)))
    delta = youden_threshold(oof, good)
    probe = fit_probe(states, good, best)
    made = {
        **about,
        "penalty": best,
        "cv_auc": round(penalties[best], 4),
        "default_delta": round(delta, 4),
        "steps": len(good),
        "bad_steps": int(bad.sum()),
        "questions": len(set(groups)),
    }
    head = probe_head(probe.weights * slope, probe.bias * slope + offset, probe.mean, probe.scale, made)
    return Trained(head, penalties[best], penalties, oof)


def youden_threshold(p_good: Array, good: Array) -> float:
    """The δ that maximises (good kept) − (bad kept), out of fold."""
    best, best_j = 0.5, -math.inf
    for delta in np.unique(p_good):
        kept = p_good >= delta
        j = kept[good == 1].mean() - kept[good == 0].mean()
        if j > best_j:
            best, best_j = float(delta), float(j)
    return best
