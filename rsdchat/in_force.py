"""What is in force: the one way from settings to the policy an answer is written with.

`solve`, `eval`, the chat app and the server all call `in_force(settings, reward)`;
a per-request or per-chat change is a `Settings.replace`. The chat adds its few own
extras (`ChatExtras`: the style, its own system prompt, where a step ends, its reward
server, the question being answered), which `in_force` reads too:

    settings ─┐
    reward   ─┼─ in_force() ─→ InForce(policy, style, system prompt, steps)
    extras   ─┘
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from rsdchat.chat.style import looks_like_math
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
    question: str | None = None  # the question being answered (set when asked): with style None, it decides


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

DEFAULT_REWARD: str = Settings.model_fields["reward"].default
DEFAULT_DELIMITER: str = Settings.model_fields["step_delimiter"].default
CHAT_REWARD, CHAT_DELTA, CHAT_STEPS = "draft-confidence", 0.5, "sentence"
"""What judges open-ended chat (prose) when the reward is left at its default, and where its steps
end (unless /steps or the step delimiter is set). The default and its δ were tuned on math steps:
prose drafts score 0.3-0.7, and δ 0.88 kept 3 of 76 prose sentences (2% of the draft's tokens).
With draft-confidence at δ 0.5 in sentences the draft kept 51% of the answer's tokens on the 16
tune prompts of benchmarks/prose_prompts.jsonl (mean preference of the target for RSD's answer
over its own 0.47), and 69% on the 8 held-out prompts with none judged worse (0.51).
docs/rewards.md ("Open-ended chat") has the table and the commands:

    .venv/bin/python benchmarks/prose_defaults.py --split tune \\
        --configs 'arithmetic*draft-confidence@0.88;draft-confidence@0.7,0.6,0.5'
"""


def reward_in_force(settings: Settings, extras: ChatExtras | None) -> tuple[str, float | None]:
    """The reward source a chat's next answer is judged by, and the default δ it gets there.

    The settings' reward with its own default δ (None), except in a chat whose style is chat (set,
    or asked for by the question) with the reward left at its default: then `CHAT_REWARD`, whose
    default δ is `CHAT_DELTA` (a δ the user set still wins), in steps of `CHAT_STEPS` (`stops`).
    Without `extras` (solve, eval, the server): the settings' reward as it is.
    """
    if extras is None or settings.reward != DEFAULT_REWARD or _style_set_or_asked(extras) is not Style.CHAT:
        return settings.reward, None
    return CHAT_REWARD, CHAT_DELTA


def delta_in_force(settings: Settings, reward: RewardSource | None) -> float:
    """δ: the setting, else the reward source's default."""
    if settings.delta is not None:
        return settings.delta
    return reward.default_delta if reward is not None else 0.0


def in_force(settings: Settings, reward: RewardSource | None, extras: ChatExtras | None = None) -> InForce:
    """What `settings` put in force, judged by `reward`; ConfigError if ω cannot be made (a bad δ, α, …).

    Without `extras` (solve, eval, the server) the settings are taken as they are. In a chat
    the style is as set, else an outcome reward's open-ended chat, else as the question looks
    (`looks_like_math`): open-ended chat runs to its end (no stop at a \\boxed{} answer) and
    gets the chat prompt by default. `reward` is the source `reward_in_force` names: in the chat
    style that is the chat's default reward, whose default δ is its prose δ.
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
    """A chat's style: as set, else an outcome reward's open-ended chat, else as the question looks.

    Before the first question (no `extras.question`) it is math, as it always was.
    """
    if extras.style is None and reward is not None and reward.kind == "outcome":
        return Style.CHAT
    return _style_set_or_asked(extras) or Style.MATH


def _style_set_or_asked(extras: ChatExtras) -> Style | None:
    """The style the user set, else the one the question asks for (None: no question yet)."""
    if extras.style is not None:
        return extras.style
    if extras.question is None:
        return None
    return Style.MATH if looks_like_math(extras.question) else Style.CHAT


def stops(settings: Settings, extras: ChatExtras = NO_EXTRAS) -> tuple[str, ...]:
    """The stop strings that end a step."""
    named = _named_steps(settings, extras)
    return STEPS[named] if named is not None else (settings.step_delimiter,)


def _named_steps(settings: Settings, extras: ChatExtras) -> str | None:
    """The steps the chat set, else `CHAT_STEPS` where the chat's defaults judge prose and the
    settings' delimiter is the default; None: the settings' delimiter."""
    if extras.steps is not None:
        return extras.steps
    if settings.step_delimiter == DEFAULT_DELIMITER and reward_in_force(settings, extras)[1] is not None:
        return CHAT_STEPS
    return None


def steps_name(settings: Settings, extras: ChatExtras = NO_EXTRAS) -> str:
    """'paragraph', 'line', 'sentence', or the configured delimiter as written ('\\n---\\n')."""
    if (chosen := _named_steps(settings, extras)) is not None:
        return chosen
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
