"""The methods `rsdchat eval` runs on the same questions, each named by a spec such as `rsd:delta=0.9`.

A spec is `NAME[:key=value[:key=value…]]`. Every method takes the core settings as
options (`rsd:reward=draft-confidence:delta=0.8`, `draft-only:temperature=0.7`); some
take their own (`bon:n=4`, `random:p=0.6`, `sd:lookahead=4`). See `METHODS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, Protocol

from rsdchat.core.engine import Engine
from rsdchat.core.errors import ConfigError
from rsdchat.core.policy import Mode, Policy
from rsdchat.core.protocols import RewardSource, Score, StepGenerator
from rsdchat.core.trace import Ledger, Trace
from rsdchat.core.types import Context, Generation
from rsdchat.core.weighting import Constant
from rsdchat.evaluation.data import Problem
from rsdchat.in_force import in_force
from rsdchat.prompts import build_messages
from rsdchat.settings import Settings

SAMPLING = {"temperature": 0.7, "top_p": 0.8}  # the paper's setting for the sampling baselines

METHODS: Mapping[str, str] = MappingProxyType(
    {
        "target-only": "the target model alone (greedy)",
        "draft-only": "the draft model alone (greedy)",
        "rsd": "reward-guided speculative decoding with the settings' reward, ω and δ",
        "random": "RSD's routing without the reward: each step to the target with a fixed chance "
        "(p=…, or the target share of the first rsd method)",
        "sd": "token-level speculative decoding, draft → target (greedy; lookahead=… tokens)",
        "maj": "majority vote over n=… draft samples (temperature 0.7, top_p 0.8)",
        "bon": "best of n=… draft samples, picked by the reward of the last step",
        "pbon": "process best-of-n: n=… draft candidates per step, the best by reward is kept",
        "beam": "step-level beam search: n=… beams, each expanded n ways, kept by reward",
    }
)
OWN_OPTIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "random": frozenset({"p"}),
        "sd": frozenset({"lookahead"}),
        "maj": frozenset({"n"}),
        "bon": frozenset({"n"}),
        "pbon": frozenset({"n"}),
        "beam": frozenset({"n"}),
    }
)


@dataclass(frozen=True)
class MethodSpec:
    """A method as written on the command line, parsed."""

    text: str  # as given, the method's name in results: "rsd:delta=0.9"
    name: str  # one of METHODS
    settings: Mapping[str, str] = field(default_factory=dict)  # core settings it overrides
    options: Mapping[str, str] = field(default_factory=dict)  # its own options (n, p, lookahead)

    def number(self, key: str, default: float) -> float:
        value = self.options.get(key)
        try:
            return default if value is None else float(value)
        except ValueError:
            raise ConfigError(f"method {self.text}: {key} must be a number, got {value!r}") from None

    def count(self, key: str, default: int) -> int:
        value = self.number(key, default)
        if value != int(value) or value < 1:
            raise ConfigError(f"method {self.text}: {key} must be a whole number ≥ 1, got {value:g}")
        return int(value)


def parse_method(text: str) -> MethodSpec:
    """'rsd:delta=0.9:reward=arithmetic' -> MethodSpec; a ConfigError lists what is valid."""
    name, *parts = [part.strip() for part in text.strip().split(":")]
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose from: {', '.join(METHODS)}")
    own = OWN_OPTIONS.get(name, frozenset())
    settings, options = {}, {}
    for part in parts:
        key, equals, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not equals or not key or not value.strip():
            raise ConfigError(f"method {text}: options are key=value, got {part!r}")
        if key in own:
            options[key] = value.strip()
        elif key in Settings.model_fields and key != "mode":
            settings[key] = value.strip()
        else:
            extra = f" ({', '.join(sorted(own))}, or a setting)" if own else " (a setting)"
            raise ConfigError(f"method {text}: unknown option {key!r}{extra}")
    spec = MethodSpec(text.strip(), name, MappingProxyType(settings), MappingProxyType(options))
    for key in options:  # checked now, not after the models have loaded
        if key in ("n", "lookahead"):
            spec.count(key, 1)
        else:
            spec.number(key, 0.0)
    return spec


def parse_methods(text: str) -> list[MethodSpec]:
    specs = [parse_method(part) for part in text.split(",") if part.strip()]
    if not specs:
        raise ConfigError("no method given; e.g. --methods target-only,draft-only,rsd")
    seen = [spec.text for spec in specs]
    if len(set(seen)) != len(seen):
        raise ConfigError(f"a method is named twice in {text!r}")
    return specs


@dataclass
class Outcome:
    """What one method produced for one question."""

    text: str  # the reply that is graded
    ledger: Ledger  # everything it cost, every sample included
    finish_reason: str
    error: str | None = None
    trace: Trace | None = None  # the chain of steps (the chosen one, for sampling methods)
    samples: list[dict[str, Any]] = field(default_factory=list)  # each sample's answer and score

    @classmethod
    def of(cls, trace: Trace) -> Outcome:
        return cls(trace.text, trace.ledger, trace.finish_reason, trace.error, trace)


class Tools(Protocol):
    """What methods need from the run: the engine, reward sources, speculative decoding."""

    engine: Engine

    async def reward(self, spec: str) -> RewardSource: ...

    def speculative(self, lookahead: int) -> StepGenerator: ...


class Method:
    """One method, ready to answer questions."""

    def __init__(self, spec: MethodSpec, settings: Settings) -> None:
        self.spec = spec
        self.settings = settings  # the run's settings with the method's own overrides

    async def prepare(self, tools: Tools) -> None:
        """Build what the method needs (a reward source, …) before the first question."""

    async def run(self, problem: Problem, tools: Tools, seed: int) -> Outcome:
        raise NotImplementedError

    def messages(self, problem: Problem) -> list[Any]:
        return build_messages(self.settings.system_prompt, problem.question)


class Chain(Method):
    """target-only, draft-only, rsd: one chain of steps through the engine."""

    policy: Policy

    async def prepare(self, tools: Tools) -> None:
        mode = {"target-only": Mode.TARGET_ONLY, "draft-only": Mode.DRAFT_ONLY}.get(self.spec.name, Mode.RSD)
        settings = self.settings.replace(mode=mode)
        self.policy = in_force(
            settings, await tools.reward(settings.reward) if mode is Mode.RSD else None
        ).policy
        tools.engine.check(self.policy)

    async def run(self, problem: Problem, tools: Tools, seed: int) -> Outcome:
        trace = await tools.engine.solve(
            self.messages(problem), self.policy, request_id=problem.id, seed=seed
        )
        return Outcome.of(trace)


class RandomRouting(Chain):
    """random: each draft step goes to the target with a fixed chance 1 - p, whatever its reward.

    The paper's constant-ω control. Without `p=…` the run sets `p` to the acceptance rate
    of its first rsd method on the same questions (the same share of target steps).
    """

    p: float | None = None

    async def prepare(self, tools: Tools) -> None:
        p = self.spec.number("p", self.p if self.p is not None else -1.0)
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"method {self.spec.text}: give p=… in [0, 1], or run an rsd method first")
        self.p = p
        settings = self.settings.replace(mode=Mode.RSD)
        self.policy = replace(in_force(settings, NoReward()).policy, weighting=Constant(p))
        tools.engine.check(self.policy)


@dataclass
class NoReward:
    """The reward of random routing: nothing is measured (ω is a constant), nothing is spent."""

    name: str = "none"
    kind: Literal["process", "outcome"] = "process"
    default_delta: float = 0.0
    bounds: tuple[float, float] | None = (0.0, 0.0)
    n_params: int = 0

    async def score(self, context: Context, step: Generation) -> Score:
        return Score(0.0)

    async def aclose(self) -> None:
        return None


class Speculative(Method):
    """sd: the target's answer, written with token-level speculation from the draft."""

    async def prepare(self, tools: Tools) -> None:
        if self.settings.temperature > 0:
            raise ConfigError(
                f"method {self.spec.text}: token-level speculative decoding here is greedy only"
            )
        self.engine = Engine(draft=None, target=tools.speculative(self.spec.count("lookahead", 4)))
        self.policy = in_force(self.settings.replace(mode=Mode.TARGET_ONLY), None).policy

    async def run(self, problem: Problem, tools: Tools, seed: int) -> Outcome:
        trace = await self.engine.solve(self.messages(problem), self.policy, request_id=problem.id, seed=seed)
        return Outcome.of(trace)
