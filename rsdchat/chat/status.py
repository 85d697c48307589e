"""What the side panel and the header say about a chat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rsdchat.chat.choice import Choice
from rsdchat.core.errors import ConfigError
from rsdchat.core.policy import Mode
from rsdchat.core.protocols import RewardSource, StepGenerator
from rsdchat.core.trace import Acceptance, Ledger
from rsdchat.in_force import chat_style, delta_in_force, steps_name, uses_delta


class _Chat(Protocol):
    """The parts of a chat session the status reads."""

    choice: Choice
    acceptance: Acceptance
    spent: Ledger
    turn: int
    load_error: str | None
    policy_error: str | None

    @property
    def live(self) -> Ledger: ...
    @property
    def reward(self) -> RewardSource | None: ...
    @property
    def ready(self) -> bool: ...
    @property
    def answering(self) -> bool: ...
    @property
    def staged(self) -> bool: ...
    def models(self) -> tuple[StepGenerator | None, StepGenerator | None]: ...


@dataclass(frozen=True)
class Status:
    rows: list[tuple[str, str]]  # the side panel: (what, value)
    state: str  # ready, answering…, loading…
    subtitle: str  # the header's one line
    cost: Ledger  # the whole chat, the answer being written included

    @classmethod
    def of(cls, chat: _Chat) -> Status:
        choice, reward = chat.choice, chat.reward
        settings, extras = choice.settings, choice.extras
        draft, target = chat.models()
        rows = [
            ("backend", settings.backend),
            ("draft", draft.info.name if draft is not None else f"{settings.draft} (not loaded)"),
            ("target", target.info.name if target is not None else f"{settings.target} (not loaded)"),
            ("reward", (reward.name if reward is not None else settings.reward).replace("*", " × ")),
        ]
        if extras.reward_url:
            model = f" ({extras.reward_model})" if extras.reward_model else ""
            rows.append(("server", extras.reward_url + model))
        style = chat_style(reward, extras)
        rows.append(("style", f"{style.value} ({'set' if extras.style is not None else 'auto'})"))
        rows.append(("mode", settings.mode.value))
        rows.append(("steps", steps_name(settings, extras)))  # where a step ends: one decision each
        if reward is None and settings.delta is None:  # δ is not known before the reward source is
            weighting, delta = settings.weighting, "the reward's default"
        else:
            try:
                weighting = choice.in_force(reward).weighting.describe()
            except ConfigError:
                weighting = settings.weighting
            delta = f"{delta_in_force(settings, reward):g}" + (" (default)" if settings.delta is None else "")
        rows.append(("weighting", weighting if settings.mode is Mode.RSD else f"{weighting} (unused)"))
        rows.append(("δ", delta + ("" if uses_delta(settings) else " (unused)")))
        acceptance = chat.acceptance
        rows.append(("accepted", acceptance.describe("row") or "–"))
        if chat.staged:
            rows.append(("pending", "changes apply from the next step"))
        if chat.load_error:
            state = "could not load the models"
        elif chat.policy_error and not chat.ready:
            state = "the settings cannot be used: change them"
        elif not chat.ready:
            state = "loading models…"
        elif chat.answering:
            state = f"answering #{chat.turn}… (Esc stops)"
        else:
            state = "ready"
        named = (reward.name if reward is not None else settings.reward).replace("*", "×")
        # the least essential last (a narrow header drops from the end): the reward shows at 80 columns
        subtitle = state if not chat.ready else f"{settings.mode.value} · reward {named} · {weighting}"
        if acceptance.judged:
            subtitle += f" · {acceptance.describe('header')}"
        if chat.ready:
            subtitle += f" · {style.value}"
        if chat.answering:  # said first, so a narrow header still shows it
            subtitle = f"answering #{chat.turn}… · {subtitle}"
        cost = Ledger()
        cost.merge(chat.spent)
        cost.merge(chat.live)
        return cls(rows, state, subtitle, cost)
