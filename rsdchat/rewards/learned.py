"""A step scorer learned from real draft mistakes: logistic regression over the free features.

The model file (JSON, shipped in the package: `rsdchat/rewards/data/`) holds the feature
names, their standardisation, the weights and what the scorer was trained and measured
on; `benchmarks/train_step_scorer.py` writes it from the labelled steps of
`benchmarks/step_labels.py`. Scoring is a dot product: no model call, no new dependency.

The reward is the chance that the step is *fine*, 1 − P(bad | features), in [0, 1].
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from rsdchat.core.errors import ConfigError
from rsdchat.core.protocols import Score
from rsdchat.core.types import Context, Generation, Usage
from rsdchat.plugins import RewardPlugin
from rsdchat.rewards.features import FEATURES, step_features

SCORER_FILE = "step-scorer.json"
VERSION = 1


@dataclass(frozen=True)
class ScorerModel:
    """Logistic regression on standardised features."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    about: dict[str, Any] = field(default_factory=dict)  # training data, procedure, measured AUC

    def p_bad(self, values: dict[str, float]) -> float:
        z = self.bias + math.fsum(
            w * (values[name] - m) / s
            for name, m, s, w in zip(self.features, self.mean, self.scale, self.weights, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "weights": list(self.weights),
            "bias": self.bias,
            "about": self.about,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ScorerModel:
        try:
            if data["version"] != VERSION:
                raise ValueError(f"version {data['version']!r}, this rsdchat reads {VERSION}")
            names = tuple(str(n) for n in data["features"])
            unknown = [n for n in names if n not in FEATURES]
            if unknown:
                raise ValueError(f"unknown feature {unknown[0]!r}")
            columns = [tuple(float(x) for x in data[key]) for key in ("mean", "scale", "weights")]
            if any(len(c) != len(names) for c in columns) or not all(s > 0 for s in columns[1]):
                raise ValueError("mean, scale and weights must have one positive-scale value per feature")
            if not all(math.isfinite(x) for c in columns for x in c) or not math.isfinite(
                float(data["bias"])
            ):
                raise ValueError("a weight is not a finite number")
            return cls(
                names, columns[0], columns[1], columns[2], float(data["bias"]), dict(data.get("about", {}))
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"step scorer file {where} is corrupt ({exc}); reinstall rsdchat") from None


def scorer_path() -> Path:
    return Path(str(resources.files("rsdchat.rewards") / "data" / SCORER_FILE))


@cache
def load_scorer(path: Path | None = None) -> ScorerModel:
    """The shipped scorer (or the one at `path`); a missing or corrupt file is one ConfigError."""
    path = path or scorer_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"step scorer file {path} cannot be read ({exc.strerror or exc}); reinstall rsdchat"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"step scorer file {path} is corrupt (not JSON: {exc.msg}); reinstall rsdchat"
        ) from None
    return ScorerModel.from_dict(data, str(path))


@dataclass
class LearnedScorer:
    """r = 1 − P(bad step | the draft's own features): the learned scorer. Free."""

    model: ScorerModel
    name: str = "draft-scorer"
    kind: Literal["process", "outcome"] = "process"
    default_delta: float = 0.5
    bounds: tuple[float, float] | None = (0.0, 1.0)
    n_params: int = 0

    def __post_init__(self) -> None:
        self.default_delta = float(self.model.about.get("default_delta", 0.5))

    async def score(self, context: Context, step: Generation) -> Score:
        started = time.perf_counter()
        if step.token_logprobs is None:
            raise ConfigError(
                "reward draft-scorer needs token log-probabilities, which the draft backend did not give"
            )
        values = step_features(context, step)
        valid = all(math.isfinite(v) and v <= 1e-6 for v in step.token_logprobs)
        reward = 1.0 - self.model.p_bad(values) if valid else math.nan  # a faulty server's values
        return Score(reward, Usage(seconds=time.perf_counter() - started), detail=_why(self.model, values))

    async def aclose(self) -> None:
        return None


def _why(model: ScorerModel, values: dict[str, float]) -> str:
    """The feature that pushed hardest towards 'bad', for the step's explanation."""
    pushes = [
        (w * (values[n] - m) / s, n)
        for n, m, s, w in zip(model.features, model.mean, model.scale, model.weights, strict=True)
    ]
    push, name = max(pushes)
    return f"most suspicious: {name} = {values[name]:.3g}" if push > 0.5 else ""


def _describe() -> str:
    try:
        auc = load_scorer().about.get("cv_auc")
    except ConfigError:
        return "a step scorer learned from real draft mistakes (its model file is missing)"
    shown = f", AUC {auc:.2f} on held-out real steps" if isinstance(auc, int | float) else ""
    return f"a scorer learned from the draft's real mistakes over its free signals{shown}"


DRAFT_SCORER = RewardPlugin("draft-scorer", _describe(), lambda ctx: LearnedScorer(load_scorer()))
