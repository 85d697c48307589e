"""What the side panel and the header say about a chat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rsdchat.chat.knobs import Knobs
from rsdchat.errors import ConfigError
from rsdchat.policy import Mode
from rsdchat.protocols import RewardSource, StepGenerator
from rsdchat.settings import Settings
from rsdchat.trace import Acceptance, Ledger


class _Chat(Protocol):
    """The parts of a chat session the status reads."""

    settings: Settings
    knobs: Knobs
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
        knobs, reward, settings = chat.knobs, chat.reward, chat.settings
        draft, target = chat.models()
        rows = [
            ("backend", settings.backend),
            ("draft", draft.info.name if draft is not None else f"{settings.draft} (not loaded)"),
            ("target", target.info.name if target is not None else f"{settings.target} (not loaded)"),
            ("reward", (reward.name if reward is not None else knobs.reward).replace("*", " × ")),
        ]
        if knobs.reward_url:
            rows.append(
                ("server", knobs.reward_url + (f" ({knobs.reward_model})" if knobs.reward_model else ""))
            )
        style = knobs.style_of(reward)
        rows.append(("style", f"{style.value} ({'set' if knobs.style is not None else 'auto'})"))
        rows.append(("mode", knobs.mode.value))
        rows.append(("steps", knobs.steps_name(settings)))  # where a step ends: one decision each
        if reward is None and knobs.delta is None:  # δ is not known before the reward source is
            weighting, delta = knobs.weighting, "the reward's default"
        else:
            try:
                weighting = knobs.policy(reward, settings).weighting.describe()
            except ConfigError:
                weighting = knobs.weighting
            delta = f"{knobs.effective_delta(reward):g}" + (" (default)" if knobs.delta is None else "")
        rows.append(("weighting", weighting if knobs.mode is Mode.RSD else f"{weighting} (unused)"))
        rows.append(("δ", delta + ("" if knobs.uses_delta() else " (unused)")))
        acceptance = chat.acceptance
        judged, accepted = acceptance.judged, acceptance.accepted
        rows.append(("accepted", f"{accepted}/{judged} drafts ({accepted / judged:.0%})" if judged else "–"))
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
        subtitle = state if not chat.ready else f"{knobs.mode.value} · {style.value} · {weighting}"
        if judged:
            subtitle += f" · accepted {accepted}/{judged}"
        if chat.answering:  # said first, so a narrow header still shows it
            subtitle = f"answering #{chat.turn}… · {subtitle}"
        cost = Ledger()
        cost.merge(chat.spent)
        cost.merge(chat.live)
        return cls(rows, state, subtitle, cost)
