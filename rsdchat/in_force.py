"""What is in force: the one way from settings to the policy an answer is written with.

`solve`, `eval`, the chat app and the server all call `in_force(settings, reward)`;
a per-request or per-chat change is a `Settings.replace`. The chat adds its few own
extras (`ChatExtras`: the style, its own system prompt, where a step ends, its reward
server), which `in_force` reads too:

    settings ─┐
    reward   ─┼─ in_force() ─→ InForce(policy, style, system prompt, steps)
    extras   ─┘
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from rsdchat.core.policy import Mode, Policy
from rsdchat.core.protocols import RewardSource
from rsdchat.core.weighting import WEIGHTINGS, Weighting, make_weighting
from rsdchat.prompts import CHAT_SYSTEM_PROMPT, MATH_SYSTEM_PROMPT
from rsdchat.settings import Settings

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
class ChatExtras:
    """What a chat sets beyond `Settings`. `None` means "follow the settings and the reward"."""

    style: Style | None = None  # None: the reward source's kind decides
    system: str | None = None  # None: the settings' prompt, or the chat prompt in the chat style
    steps: str | None = None  # a name in STEPS; None: the settings' step_delimiter
    reward_url: str | None = None  # the reward server of this chat; None: the configured one
    reward_model: str | None = None  # the model it serves; None: the configured one (or its only one)


@dataclass(frozen=True)
class InForce:
    """What the next step is written with: the engine's policy, and for a chat its prompt and style."""

    policy: Policy
    style: Style
    system: str  # the system prompt the next question is sent with
    steps: str  # where a step ends: a name in STEPS, or the configured delimiter as written
    reward: str  # the reward source's name (the spec when none is built)
    custom_system: bool = False  # the user set the system prompt (else it follows the style)
    reward_url: str | None = None  # the chat's own reward server (None: the configured one)

    @property
    def weighting(self) -> Weighting:
        return self.policy.weighting

    @property
    def mode(self) -> Mode:
        return self.policy.mode

    def to_dict(self) -> dict[str, Any]:
        """As a transcript records it (`in_force` of a question or a change)."""
        data = {
            "mode": self.mode.value,
            "style": self.style.value,
            "reward": self.reward,
            "weighting": self.weighting.to_dict(),
            "system": self.system,
            "steps": self.steps,
        }
        return data | ({"reward_url": self.reward_url} if self.reward_url else {})


NO_EXTRAS = ChatExtras()


def delta_in_force(settings: Settings, reward: RewardSource | None) -> float:
    """δ: the setting, else the reward source's default."""
    if settings.delta is not None:
        return settings.delta
    return reward.default_delta if reward is not None else 0.0


def in_force(settings: Settings, reward: RewardSource | None, extras: ChatExtras | None = None) -> InForce:
    """What `settings` put in force, judged by `reward`; ConfigError if ω cannot be made (a bad δ, α, …).

    Without `extras` (solve, eval, the server) the settings are taken as they are. In a chat
    the style follows the reward unless set: an outcome reward holds an open-ended chat, which
    runs to its end (no stop at a \\boxed{} answer) and gets the chat prompt by default.
    """
    style = chat_style(reward, extras) if extras is not None else Style.MATH
    extras = extras or NO_EXTRAS
    weighting = make_weighting(
        settings.weighting,
        delta=delta_in_force(settings, reward),
        alpha=settings.alpha,
        p=settings.p,
        beta=settings.beta,
    )
    policy = Policy(
        mode=settings.mode,
        reward=reward,
        weighting=weighting,
        max_steps=settings.max_steps,
        max_step_tokens=settings.max_step_tokens,
        max_tokens=settings.max_tokens,
        stop=stops(settings, extras),
        temperature=settings.temperature,
        top_p=settings.top_p,
        stop_at_answer=settings.stop_at_answer and style is Style.MATH,
        score_target_steps=settings.score_target_steps,
        reuse_draft=settings.reuse_draft,
        keep_pen=settings.keep_pen,
    )
    system = extras.system
    if system is None:
        chat_default = style is Style.CHAT and settings.system_prompt == MATH_SYSTEM_PROMPT
        system = CHAT_SYSTEM_PROMPT if chat_default else settings.system_prompt
    return InForce(
        policy=policy,
        style=style,
        system=system,
        steps=steps_name(settings, extras),
        reward=reward.name if reward is not None else settings.reward,
        custom_system=extras.system is not None,
        reward_url=extras.reward_url,
    )


def chat_style(reward: RewardSource | None, extras: ChatExtras) -> Style:
    """A chat's style: as set, else an outcome reward's open-ended chat, else math."""
    if extras.style is not None:
        return extras.style
    return Style.CHAT if reward is not None and reward.kind == "outcome" else Style.MATH


def stops(settings: Settings, extras: ChatExtras = NO_EXTRAS) -> tuple[str, ...]:
    """The stop strings that end a step."""
    return STEPS[extras.steps] if extras.steps is not None else (settings.step_delimiter,)


def steps_name(settings: Settings, extras: ChatExtras = NO_EXTRAS) -> str:
    """'paragraph', 'line', 'sentence', or the configured delimiter as written ('\\n---\\n')."""
    if extras.steps is not None:
        return extras.steps
    named = [name for name, found in STEPS.items() if found == (settings.step_delimiter,)]
    return named[0] if named else repr(settings.step_delimiter)


def uses_delta(settings: Settings) -> bool:
    """Whether the weighting in force has a δ to move."""
    return "delta" in WEIGHTINGS[settings.weighting].params()


def delta_step(reward: RewardSource | None) -> float:
    """How far one key press moves δ: fine for [0, 1] rewards, coarser for unbounded ones."""
    return 0.05 if reward is not None and reward.bounds is not None else 0.5


def nudged_delta(settings: Settings, reward: RewardSource | None, direction: int) -> float:
    """δ raised (direction=1) or lowered (-1) to the next point of the step's grid, within bounds."""
    step = delta_step(reward)
    position = delta_in_force(settings, reward) / step
    grid = math.floor(position + 1e-9) + 1 if direction > 0 else math.ceil(position - 1e-9) - 1
    value = round(grid * step, 6)
    if reward is not None and reward.bounds is not None:
        low, high = reward.bounds
        value = min(high, max(low, value))
    return value
