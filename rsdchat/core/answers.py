"""The final answer a reply states: the content of its last complete `\\boxed{...}`.

One home for reading `\\boxed` (and `\\fbox`): the engine stops at the first step that
holds one, front ends show it, and the grader starts from it (its fallbacks for
replies that state no boxed answer live in `rsdchat.evaluation.grading`).
"""

from __future__ import annotations

import re

MAX_BOXED = 8  # boxed answers tried, from the last: runaway output stays cheap

_BOXED = re.compile(r"\\(?:boxed|fbox)\b\s*")
_BRACE = re.compile(r"[{}]")
_BARE = re.compile(r"[^\s${}.,]+")  # \boxed 5 (no braces)


def last_boxed(text: str) -> str | None:
    """The content of the last complete, non-empty `\\boxed{...}` in `text`, else None.

    Braces nest (`\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`); an unclosed one does not
    count, so a reply cut short while writing its answer states none.
    """
    for match in list(_BOXED.finditer(text))[-MAX_BOXED:][::-1]:
        start = match.end()
        if not text.startswith("{", start):
            bare = _BARE.match(text, start)
            if bare:
                return bare.group()
            continue
        depth = 0
        for brace in _BRACE.finditer(text, start):
            depth += 1 if brace.group() == "{" else -1
            if depth == 0:
                content = text[start + 1 : brace.start()].strip()
                if content:
                    return content
                break
    return None


def has_final_answer(text: str) -> bool:
    """True if `text` states a final answer (a complete `\\boxed{...}`)."""
    return last_boxed(text) is not None
