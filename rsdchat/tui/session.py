"""The chat's state without any UI: which knobs are in force, and what the models are told.

The app turns key presses and slash commands into new `Knobs`; `policy_for` turns the
knobs and the current reward source into the engine `Policy` the next step will use.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from rsdchat.engine import Mode, Policy
from rsdchat.errors import ConfigError
from rsdchat.protocols import RewardSource
from rsdchat.settings import MATH_SYSTEM_PROMPT, Settings
from rsdchat.trace import Ledger
from rsdchat.types import Message, Role
from rsdchat.weighting import WEIGHTINGS, make_weighting

CHAT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Write your reply in short paragraphs separated by blank lines."
)

# weighting name -> the parameters `/weighting NAME ...` takes, in order
WEIGHTING_PARAMS: dict[str, tuple[str, ...]] = {
    "binary": ("delta",),
    "constant": ("p",),
    "clip": (),
    "sigmoidal": (),
    "logistic": ("alpha", "delta"),
    "likelihood-ratio": ("alpha",),
    "hybrid": ("beta",),
}
assert set(WEIGHTING_PARAMS) == set(WEIGHTINGS)

PARAM_SYMBOL = {"delta": "δ", "alpha": "α", "p": "p", "beta": "β"}


class Style(str, enum.Enum):
    """How the conversation is held: step-by-step math, or open-ended chat (paper §4)."""

    MATH = "math"  # process reward in [0, 1], stops at a \\boxed{} answer
    CHAT = "chat"  # outcome reward of the response so far, unbounded, runs to the end


@dataclass(frozen=True)
class Knobs:
    """What the user can change while chatting. `None` means "the default"."""

    reward: str
    mode: Mode = Mode.RSD
    weighting: str = "binary"
    delta: float | None = None  # None: the reward source's default_delta
    alpha: float = 10.0
    p: float = 0.5
    beta: float = 1.0
    style: Style | None = None  # None: follows the reward source's kind
    system: str | None = None  # None: the default prompt of the style

    @classmethod
    def from_settings(cls, settings: Settings) -> Knobs:
        return cls(
            reward=settings.reward,
            mode=settings.mode,
            weighting=settings.weighting,
            delta=settings.delta,
            alpha=settings.alpha,
            p=settings.p,
            beta=settings.beta,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mode"] = self.mode.value
        data["style"] = self.style.value if self.style is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Knobs:
        """Knobs from a saved transcript; raises ConfigError on a value that makes no sense."""
        known = {f.name for f in fields(cls)}
        given = {k: v for k, v in data.items() if k in known}
        try:
            if "mode" in given:
                given["mode"] = Mode(given["mode"])
            if given.get("style") is not None:
                given["style"] = Style(given["style"])
            for name in ("delta", "alpha", "p", "beta"):
                value = given.get(name)
                if value is not None and not (isinstance(value, int | float) and math.isfinite(value)):
                    raise ValueError(f"{name} must be a finite number, got {value!r}")
            if not isinstance(given.get("reward"), str):
                raise ValueError("reward must be a name")
            return cls(**given)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad settings in transcript: {exc}") from None


def style_of(knobs: Knobs, reward: RewardSource | None) -> Style:
    """The conversation style in force: chosen explicitly, else the reward source's kind."""
    if knobs.style is not None:
        return knobs.style
    if reward is not None and reward.kind == "outcome":
        return Style.CHAT
    return Style.MATH


def effective_delta(knobs: Knobs, reward: RewardSource | None) -> float:
    if knobs.delta is not None:
        return knobs.delta
    return reward.default_delta if reward is not None else 0.0


def system_prompt(knobs: Knobs, reward: RewardSource | None, settings: Settings) -> str:
    """The system prompt the next question is sent with."""
    if knobs.system is not None:
        return knobs.system
    if style_of(knobs, reward) is Style.CHAT and settings.system_prompt == MATH_SYSTEM_PROMPT:
        return CHAT_SYSTEM_PROMPT
    return settings.system_prompt


def policy_for(knobs: Knobs, reward: RewardSource | None, settings: Settings) -> Policy:
    """The engine policy for `knobs`; raises ConfigError on an invalid weighting or value."""
    delta = effective_delta(knobs, reward)
    weighting = make_weighting(knobs.weighting, delta=delta, alpha=knobs.alpha, p=knobs.p, beta=knobs.beta)
    base = settings.policy(delta)
    stop_at_answer = settings.stop_at_answer and style_of(knobs, reward) is Style.MATH
    return replace(base, mode=knobs.mode, weighting=weighting, stop_at_answer=stop_at_answer)


def uses_delta(knobs: Knobs) -> bool:
    return "delta" in WEIGHTING_PARAMS.get(knobs.weighting, ())


def delta_step(reward: RewardSource | None) -> float:
    """How far one key press moves δ: fine for [0, 1] rewards, coarser for unbounded ones."""
    return 0.5 if reward is not None and reward.kind == "outcome" else 0.05


def nudge_delta(knobs: Knobs, reward: RewardSource | None, direction: int) -> Knobs:
    """δ raised (direction=1) or lowered (-1) to the next point of the step's grid."""
    step = delta_step(reward)
    position = effective_delta(knobs, reward) / step
    grid = math.floor(position + 1e-9) + 1 if direction > 0 else math.ceil(position - 1e-9) - 1
    value = round(grid * step, 6)
    if reward is None or reward.kind == "process":
        value = min(1.0, max(0.0, value))
    return replace(knobs, delta=value)


@dataclass(frozen=True)
class Turn:
    """One finished exchange, as the models will see it in later questions."""

    question: str
    answer: str


def messages_for(system: str, history: list[Turn], question: str) -> list[Message]:
    """The conversation sent to the models: system prompt, previous turns, the new question.

    Turns that produced no text (cancelled or failed at once) are left out, so the models
    never see two user turns in a row.
    """
    messages = [Message("system", system)] if system.strip() else []
    for turn in history:
        if turn.answer.strip():
            messages += [Message("user", turn.question), Message("assistant", turn.answer)]
    messages.append(Message("user", question))
    return messages


def fmt(value: float) -> str:
    """A number as the user typed it: 0.7, 10, -1.5, 1e+03."""
    return f"{value:g}"


@dataclass
class RoleTotals:
    tokens: int = 0
    flops: float = 0.0
    seconds: float = 0.0


@dataclass
class CostMeter:
    """Running cost per role over the chat (tokens read and written, FLOPs, backend seconds)."""

    roles: dict[Role, RoleTotals] = field(default_factory=lambda: {role: RoleTotals() for role in Role})

    def add(self, ledger: Ledger) -> None:
        for role in Role:
            cost = ledger.cost(role)
            totals = self.roles[role]
            totals.tokens += cost.prefill_tokens + cost.generated_tokens
            totals.flops += cost.flops
            totals.seconds += cost.seconds

    def add_saved(self, cost: dict[str, Any]) -> None:
        """Add the `cost` of a saved answer record (Ledger.to_dict's layout)."""
        for role in Role:
            saved = cost.get(role.value)
            if isinstance(saved, dict):
                totals = self.roles[role]
                totals.tokens += int(saved.get("prefill_tokens", 0)) + int(saved.get("generated_tokens", 0))
                totals.flops += float(saved.get("flops", 0.0))
                totals.seconds += float(saved.get("seconds", 0.0))

    def plus(self, other: CostMeter) -> CostMeter:
        return CostMeter(
            {
                role: RoleTotals(a.tokens + b.tokens, a.flops + b.flops, a.seconds + b.seconds)
                for role, a, b in ((r, self.roles[r], other.roles[r]) for r in Role)
            }
        )
