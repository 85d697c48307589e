"""What an empty chat shows: what rsdchat does, how to read a step, what to try, the keys that matter.

Short enough for 80×24 with the models' loading line under it; it goes when the first question is asked.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

EXAMPLES = (
    ("math", "A shirt costs $45 after a 25% discount. What was its price?"),
    ("prose", "Explain what a hash table is in three sentences."),
)


def welcome_text() -> Text:
    """About 14 lines of at most 70 columns."""
    text = Text()
    text.append("rsdchat", "bold").append(" · Reward-Guided Speculative Decoding, step by step\n")
    text.append("A small ").append("draft", "bold cyan").append(
        " model writes each step and a reward r scores it; a\n"
    )
    text.append("step with r below the threshold δ is rewritten by the larger ")
    text.append("target", "bold magenta").append(".\n\n")
    text.append("Each step's line says who wrote it (draft or target), its reward r\n")
    text.append("against δ (≥ keeps, < rejects), the weight ω (1 keeps, 0 rejects)\n")
    text.append("and ✓ accepted or ✗ rejected; F6 opens the rejected drafts.\n\n")
    text.append("Try\n", "bold")
    for kind, question in EXAMPLES:
        text.append(f"  {kind:<7}", "dim").append(f"{question}\n")
    text.append("\nKeys  ", "bold")
    text.append("Enter send · Shift+Enter/Ctrl+J new line · ↑ earlier questions\n")
    text.append("      Esc stop · Ctrl+↑/↓ (F8/F7) δ up/down · F1 or /help: everything")
    return text


class Welcome(Static):
    """The guidance on an empty chat."""

    def __init__(self) -> None:
        super().__init__(welcome_text(), id="welcome")
