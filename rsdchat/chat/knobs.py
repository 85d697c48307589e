"""What the user can change while chatting (`Knobs`), and the policy and prompt that follow from it."""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from rsdchat.errors import ConfigError
from rsdchat.policy import Mode, Policy
from rsdchat.prompts import CHAT_SYSTEM_PROMPT, MATH_SYSTEM_PROMPT
from rsdchat.protocols import RewardSource
from rsdchat.settings import Settings
from rsdchat.weighting import WEIGHTINGS, make_weighting

STEPS: dict[str, tuple[str, ...]] = {
    "paragraph": ("\n\n",),  # the paper's setting (a step ends at a blank line)
    "line": ("\n",),
    "sentence": (". ", "? ", "! ", "\n"),
}
"""How a chat can cut a reply into steps: the stop strings that end one (the first one written wins)."""
STEP_WORDS = {"paragraph": "blank line", "line": "line break", "sentence": ". ? ! or line break"}


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
    steps: str | None = None  # a name in STEPS; None: the settings' step_delimiter
    reward_url: str | None = None  # the reward server of this chat; None: the configured one
    reward_model: str | None = None  # the model it serves; None: the configured one (or its only one)

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
            if given.get("weighting", "binary") not in WEIGHTINGS:
                raise ValueError(f"unknown weighting {given.get('weighting')!r}")
            if given.get("steps") is not None and given["steps"] not in STEPS:
                raise ValueError(f"unknown steps {given['steps']!r}")
            for name in ("reward_url", "reward_model", "system"):
                if given.get(name) is not None and not isinstance(given[name], str):
                    raise ValueError(f"{name} must be text, got {given[name]!r}")
            return cls(**given)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad settings in transcript: {exc}") from None

    def stops(self, settings: Settings) -> tuple[str, ...]:
        """The stop strings that end a step."""
        return STEPS[self.steps] if self.steps is not None else (settings.step_delimiter,)

    def steps_name(self, settings: Settings) -> str:
        """'paragraph', 'line', 'sentence', or the configured delimiter as written ('\\n---\\n')."""
        if self.steps is not None:
            return self.steps
        named = [name for name, stops in STEPS.items() if stops == (settings.step_delimiter,)]
        return named[0] if named else repr(settings.step_delimiter)

    def uses_delta(self) -> bool:
        return "delta" in WEIGHTINGS[self.weighting].params()

    def effective_delta(self, reward: RewardSource | None) -> float:
        if self.delta is not None:
            return self.delta
        return reward.default_delta if reward is not None else 0.0

    def style_of(self, reward: RewardSource | None) -> Style:
        """The conversation style in force: chosen explicitly, else the reward source's kind."""
        if self.style is not None:
            return self.style
        if reward is not None and reward.kind == "outcome":
            return Style.CHAT
        return Style.MATH

    def system_prompt(self, reward: RewardSource | None, settings: Settings) -> str:
        """The system prompt the next question is sent with."""
        if self.system is not None:
            return self.system
        if self.style_of(reward) is Style.CHAT and settings.system_prompt == MATH_SYSTEM_PROMPT:
            return CHAT_SYSTEM_PROMPT
        return settings.system_prompt

    def policy(self, reward: RewardSource | None, settings: Settings) -> Policy:
        """The engine policy for these knobs; raises ConfigError on an invalid weighting or value."""
        delta = self.effective_delta(reward)
        weighting = make_weighting(self.weighting, delta=delta, alpha=self.alpha, p=self.p, beta=self.beta)
        base = settings.policy(reward)
        stop_at_answer = settings.stop_at_answer and self.style_of(reward) is Style.MATH
        return replace(
            base,
            mode=self.mode,
            weighting=weighting,
            stop=self.stops(settings),
            stop_at_answer=stop_at_answer,
        )


def delta_step(reward: RewardSource | None) -> float:
    """How far one key press moves δ: fine for [0, 1] rewards, coarser for unbounded ones."""
    return 0.05 if reward is not None and reward.bounds is not None else 0.5


def nudge_delta(knobs: Knobs, reward: RewardSource | None, direction: int) -> Knobs:
    """δ raised (direction=1) or lowered (-1) to the next point of the step's grid, within bounds."""
    step = delta_step(reward)
    position = knobs.effective_delta(reward) / step
    grid = math.floor(position + 1e-9) + 1 if direction > 0 else math.ceil(position - 1e-9) - 1
    value = round(grid * step, 6)
    if reward is not None and reward.bounds is not None:
        low, high = reward.bounds
        value = min(high, max(low, value))
    return replace(knobs, delta=value)


def fmt(value: float) -> str:
    """A number as the user typed it: 0.7, 10, -1.5, 1e+03."""
    return f"{value:g}"
