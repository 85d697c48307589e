"""What the side panel and the header say about the chat."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rsdchat.engine import Mode
from rsdchat.errors import ConfigError
from rsdchat.tui.session import effective_delta, policy_for, style_of, uses_delta

if TYPE_CHECKING:
    from rsdchat.tui.app import RsdChatApp


def status_rows(app: RsdChatApp) -> tuple[list[tuple[str, str]], str, str]:
    """(rows of the side panel, the state line, the header's subtitle)."""
    knobs, reward, settings, engine = app.knobs, app.reward, app.settings, app.engine
    draft = target = None
    if engine is not None:
        draft = engine.draft.info.name if engine.draft is not None else None
        target = engine.target.info.name if engine.target is not None else None
    rows = [
        ("backend", settings.backend),
        ("draft", draft or f"{settings.draft} (not loaded)"),
        ("target", target or f"{settings.target} (not loaded)"),
        ("reward", (reward.name if reward is not None else knobs.reward).replace("*", " × ")),
    ]
    style = style_of(knobs, reward)
    rows.append(("style", f"{style.value} ({'set' if knobs.style is not None else 'auto'})"))
    rows.append(("mode", knobs.mode.value))
    if reward is None and knobs.delta is None:  # δ is not known before the reward source is
        weighting, delta = knobs.weighting, "the reward's default"
    else:
        try:
            weighting = policy_for(knobs, reward, settings).weighting.describe()
        except ConfigError:
            weighting = knobs.weighting
        delta = f"{effective_delta(knobs, reward):g}" + (" (default)" if knobs.delta is None else "")
    rows.append(("weighting", weighting if knobs.mode is Mode.RSD else f"{weighting} (unused)"))
    delta += "" if uses_delta(knobs) else " (unused)"
    rows.append(("δ", delta))
    scored, accepted = app.drafts_scored, app.drafts_accepted
    rows.append(("accepted", f"{accepted}/{scored} drafts ({accepted / scored:.0%})" if scored else "–"))
    if app.controls.staged is not None:
        rows.append(("pending", "changes apply from the next step"))

    if app.load_error:
        state = "could not load the models"
    elif engine is None:
        state = "loading models…"
    elif app.generating:
        state = f"answering #{app.turn}… (Esc stops)"
    else:
        state = "ready"
    subtitle = state if engine is None else f"{knobs.mode.value} · {style.value} · {weighting}"
    if scored:
        subtitle += f" · accepted {accepted}/{scored}"
    return rows, state, subtitle
