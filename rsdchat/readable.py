"""Replies as people read them: LaTeX math as plain Unicode, Markdown styled, the answer highlighted.

Models write `\\(\\frac{3}{4}\\)`, `\\[ 48 \\times 2 = 96 \\]`, `\\text{ km}` and `**Step 1:**`.
`readable(text)` turns that into a Rich renderable: the math through pylatexenc
(`3/4`, `48 × 2 = 96`, `km`), Markdown through Rich, and each `\\boxed{…}` answer in
bold. Only what is shown changes: JSON, transcripts and exports keep the raw text.
"""

from __future__ import annotations

import re
from functools import cache

from rich.console import RenderableType
from rich.markdown import Markdown
from rich.text import Text

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
ANSWER_STYLE = "bold green"


@cache
def _converter() -> object:
    from pylatexenc.latex2text import LatexNodes2Text

    return LatexNodes2Text(math_mode="text", strict_latex_spaces=False)


def latex_to_text(text: str) -> str:
    """The LaTeX in `text` as plain Unicode (`\\frac{a}{b}` → a/b, `\\times` → ×, `\\text{}` dropped)."""
    try:
        converted: str = _converter().latex_to_text(text)  # type: ignore[attr-defined]
    except Exception:  # an unbalanced brace while a step streams in: show it as it is
        return text
    converted = re.sub(r"[ \t]*×[ \t]*", " × ", converted)  # pylatexenc drops the space after ×
    converted = re.sub(r"(?<=\S)[ \t]{2,}", " ", converted)  # \text{ km} leaves two spaces
    return re.sub(r"[ \t]+\n", "\n", converted)


def _split_boxed(text: str) -> list[tuple[str, bool]]:
    """`text` in pieces: (text, is it a \\boxed answer's content)."""
    pieces: list[tuple[str, bool]] = []
    position = 0
    for match in _BOXED.finditer(text):
        if match.start() < position:
            continue
        depth, end = 1, None
        for i in range(match.end(), len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                end = i
                break
        if end is None:
            break  # still being written
        pieces += [(text[position : match.start()], False), (text[match.end() : end], True)]
        position = end + 1
    pieces.append((text[position:], False))
    return [(piece, boxed) for piece, boxed in pieces if piece]


def readable_text(text: str) -> Text:
    """One line of plain styling (no Markdown blocks): math converted, answers highlighted."""
    out = Text()
    for piece, boxed in _split_boxed(text):
        out.append(latex_to_text(piece), ANSWER_STYLE if boxed else "")
    return out


def readable(text: str) -> RenderableType:
    """A reply's text for the screen: math as Unicode, Markdown styled, boxed answers in bold."""
    parts = []
    for piece, boxed in _split_boxed(text):
        shown = latex_to_text(piece)
        parts.append(f"**⟨{shown.strip()}⟩**" if boxed else shown)
    return Markdown("".join(parts), code_theme="ansi_dark", inline_code_lexer=None)
