"""Replies as people read them: LaTeX math as plain Unicode, Markdown styled, the answer highlighted.

Models write `\\(\\frac{3}{4}\\)`, `\\[ 48 \\times 2 = 96 \\]`, `$x^2$`, `\\text{ km}` and
`**Step 1:**`. `readable(text)` turns that into a Rich renderable: the math through
pylatexenc (`3/4`, `48 × 2 = 96`, `x²`, `km`), Markdown through Rich, and each
`\\boxed{…}` answer highlighted. Only math is converted — delimited math, and known
LaTeX commands written bare (`\\frac{1}{2}`, `\\boxed{7}`) — so prose keeps its `%`, `&`,
braces and dollar amounts, and code is shown as written. Math still being written (an
opener without its closer, an unbalanced brace) is shown raw until it is complete.
Only what is shown changes: JSON, transcripts and exports keep the raw text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from functools import cache, lru_cache
from typing import Any, Literal

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.markdown import Markdown
from rich.text import Text
from rich.theme import Theme

ANSWER_STYLE = "bold green"
BOX_OPEN, BOX_CLOSE = "\ue000", "\ue001"  # around a \boxed answer in converted text
_LINE = "\ue002"  # a display's line break, merged with the text's own
Kind = Literal["text", "code", "math", "display", "raw"]

_DISPLAY = (("$$", "$$"), ("\\[", "\\]"))
_MATH_ENVS = r"equation|align|aligned|gather|gathered|multline|eqnarray|displaymath|math|cases|[pbvBV]?matrix"
_BEGIN = re.compile(r"\\begin\{(" + _MATH_ENVS + r")(\*?)\}")
_MACRO = re.compile(r"\\([A-Za-z]+)")
_FENCE = re.compile(r"^(```+|~~~+)", re.MULTILINE)
_SUPERSCRIPT = dict(zip("0123456789+-=()ni", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿⁱ", strict=True))
_SUBSCRIPT = dict(zip("0123456789+-=()aeoxhklmnpstijruv", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑₒₓₕₖₗₘₙₚₛₜᵢⱼᵣᵤᵥ", strict=True))
_SCRIPT = re.compile(r"([\^_])\s*(\{([^{}]*)\}|[A-Za-z0-9])")
_OPERATORS = re.compile(r"[ \t\xa0]*([×÷±∓≤≥≠≈≡→⇒⟹·])[ \t\xa0]*")


# -- finding the math ---------------------------------------------------------------------


def _closing_dollar(text: str, start: int) -> int | None:
    """Where the `$` closing inline math opened at `start` is (pandoc's rule), else None."""
    if start + 1 >= len(text) or text[start + 1].isspace():
        return None
    i = start + 1
    while True:
        i = text.find("$", i)
        if i < 0 or text[start:i].count("\n\n"):
            return None
        if not text[i - 1].isspace() and text[i - 1] != "\\" and not text[i + 1 : i + 2].isdigit():
            return i
        i += 1


def _group_end(text: str, start: int) -> int | None:
    """The index after the `{…}` or `[…]` group opened at `start` (None: not closed yet)."""
    close = "}" if text[start] == "{" else "]"
    depth, i = 0, start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == text[start]:
            depth += 1
        elif char == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _macro_end(text: str, start: int) -> int | None:
    """The end of the bare command at `start` with its arguments (None: still being written)."""
    match = _MACRO.match(text, start)
    assert match is not None
    end = match.end()
    while True:
        skip = end
        while skip < len(text) and text[skip] in " \t":
            skip += 1
        if skip < len(text) and text[skip] in "{[" and (text[skip] == "{" or skip == end):
            group = _group_end(text, skip)
            if group is None:
                return None
            end = group
        else:
            return end


def segments(text: str) -> list[tuple[Kind, str]]:
    """`text` cut into prose, code, inline math, display math and a raw unfinished tail.

    Math pieces keep their delimiters off: ('math', '\\frac{1}{2}'). A construct opened and
    not closed (the text is still streaming) makes the rest of the text one 'raw' piece.
    """
    pieces: list[tuple[Kind, str]] = []
    prose: list[str] = []

    def flush() -> None:
        if prose:
            pieces.append(("text", "".join(prose)))
            prose.clear()

    def add(kind: Kind, piece: str) -> None:
        flush()
        pieces.append((kind, piece))

    i, n = 0, len(text)
    while i < n:
        char = text[i]
        fence = _FENCE.match(text, i) if char in "`~" and (i == 0 or text[i - 1] == "\n") else None
        if fence:
            close = text.find("\n" + fence.group(1), fence.end())
            line_end = text.find("\n", close + 1) if close >= 0 else -1
            end = n if line_end < 0 else line_end
            add("code", text[i:end])
            i = end
        elif char == "`":
            ticks = len(text[i:]) - len(text[i:].lstrip("`"))
            close = text.find("`" * ticks, i + ticks)
            if close < 0:
                prose.append(text[i : i + ticks])
                i += ticks
            else:
                add("code", text[i : close + ticks])
                i = close + ticks
        elif opener := next((d for d in _DISPLAY if text.startswith(d[0], i)), None):
            close = text.find(opener[1], i + 2)
            if close < 0:
                add("raw", text[i:])
                break
            add("display", text[i + 2 : close])
            i = close + 2
        elif text.startswith("\\(", i):
            close = text.find("\\)", i + 2)
            if close < 0:
                add("raw", text[i:])
                break
            add("math", text[i + 2 : close])
            i = close + 2
        elif begin := _BEGIN.match(text, i):
            end_tag = f"\\end{{{begin.group(1)}{begin.group(2)}}}"
            close = text.find(end_tag, begin.end())
            if close < 0:
                add("raw", text[i:])
                break
            add("display", text[i : close + len(end_tag)])
            i = close + len(end_tag)
        elif char == "$":
            dollar = _closing_dollar(text, i)
            if dollar is None:
                prose.append(char)
                i += 1
            else:
                add("math", text[i + 1 : dollar])
                i = dollar + 1
        elif char == "\\" and (macro := _MACRO.match(text, i)) and _known(macro.group(1)):
            macro_end = _macro_end(text, i)
            if macro_end is None:
                add("raw", text[i:])
                break
            add("math", text[i:macro_end])
            i = macro_end
        elif char == "\\" and text[i + 1 : i + 2] and text[i + 1] in "$%&#_{}\\":
            prose.append(text[i : i + 2])  # an escaped character (Markdown reads the escape too)
            i += 2
        else:
            prose.append(char)
            i += 1
    flush()
    return pieces


# -- converting it ------------------------------------------------------------------------


def _wrap(text: str) -> str:
    """A fraction's part, in parentheses when it is more than one term."""
    text = text.strip()
    return f"({text})" if re.search(r"[\s+\-−×÷·/]", text) and not re.fullmatch(r"\(.*\)", text) else text


def _arg(node: Any, l2tobj: Any, k: int) -> str:
    args = node.nodeargd.argnlist if node.nodeargd is not None else []
    if k >= len(args) or args[k] is None:
        return ""
    return str(l2tobj._groupnodecontents_to_text(args[k]))


def _frac(n: Any, l2tobj: Any) -> str:
    return f"{_wrap(_arg(n, l2tobj, 0))}/{_wrap(_arg(n, l2tobj, 1))}"


def _sqrt(n: Any, l2tobj: Any) -> str:
    index, radicand = _arg(n, l2tobj, 0).strip(), _arg(n, l2tobj, 1).strip()
    root = {"": "√", "2": "√", "3": "∛", "4": "∜"}.get(index, f"{index}√")
    return root + (radicand if re.fullmatch(r"\w+|\(.*\)", radicand) else f"({radicand})")


def _boxed(n: Any, l2tobj: Any) -> str:
    return BOX_OPEN + _arg(n, l2tobj, 0).strip() + BOX_CLOSE


def _binom(n: Any, l2tobj: Any) -> str:
    return f"C({_arg(n, l2tobj, 0).strip()}, {_arg(n, l2tobj, 1).strip()})"


@cache
def _converters() -> tuple[Any, Any]:
    """pylatexenc's parser context and text converter, with rsdchat's math macros."""
    from pylatexenc import latex2text, latexwalker, macrospec

    # half-written LaTeX (a step still streaming) makes pylatexenc log warnings: not the user's business
    logging.getLogger("pylatexenc").setLevel(logging.CRITICAL)

    two = ("frac", "dfrac", "tfrac", "cfrac", "binom", "dbinom", "tbinom")
    walker = latexwalker.get_default_latex_context_db()
    walker.add_context_category(
        "rsdchat",
        prepend=True,
        macros=[macrospec.std_macro(name, False, 2) for name in two]
        + [macrospec.std_macro(name, False, 1) for name in ("boxed", "fbox", "operatorname", "mathbb")],
    )
    spec = latex2text.MacroTextSpec
    text = latex2text.get_default_latex_context_db()
    text.add_context_category(
        "rsdchat",
        prepend=True,
        macros=[spec(name, simplify_repl=_frac) for name in two[:4]]
        + [spec(name, simplify_repl=_binom) for name in two[4:]]
        + [spec("sqrt", simplify_repl=_sqrt), spec("boxed", simplify_repl=_boxed)]
        + [spec("fbox", simplify_repl=_boxed), spec("operatorname", discard=False)]
        + [spec("mathbb", discard=False), spec("left", ""), spec("right", ""), spec("displaystyle", "")]
        + [spec("dots", "…"), spec("cdots", "⋯"), spec("implies", " ⟹ "), spec("iff", " ⟺ ")],
    )
    return walker, latex2text.LatexNodes2Text(text, math_mode="text", strict_latex_spaces=False)


def _known(name: str) -> bool:
    """A command pylatexenc can write as text (so `\\frac` is math, and a path like `C:\\Users` is not)."""
    return _converters()[1].latex_context.get_macro_spec(name) is not None


def _scripts(source: str) -> str:
    """`x^2`, `a_{n+1}` → x², aₙ₊₁ where Unicode has every character; `e^{i\\pi}` → e^(iπ)."""

    def one(match: re.Match[str]) -> str:
        table = _SUPERSCRIPT if match.group(1) == "^" else _SUBSCRIPT
        body = match.group(3) if match.group(3) is not None else match.group(2)
        if body.strip() in ("\\circ", "o") and match.group(1) == "^" and match.group(3) is not None:
            return "°"
        if body and all(c in table for c in body):
            return "".join(table[c] for c in body)
        return match.group(0) if match.group(3) is None else f"{match.group(1)}({body})"

    source = re.sub(r"\^\s*\\circ\b|\^\s*\{\s*\\circ\s*\}", "°", source)
    return _SCRIPT.sub(one, source)


@lru_cache(maxsize=4096)
def math_to_text(source: str) -> str:
    """One piece of LaTeX math as Unicode text (unchanged if pylatexenc cannot read it)."""
    walker_context, converter = _converters()
    from pylatexenc.latexwalker import LatexWalker

    prepared = re.sub(r"(?<!\\)%", r"\\%", _scripts(source))
    try:
        walker = LatexWalker(prepared, latex_context=walker_context, tolerant_parsing=False)
        nodes = walker.get_latex_nodes()[0]
        text = str(converter.nodelist_to_text(nodes))
    except Exception:  # what pylatexenc cannot parse is shown as it was written
        return source
    text = _OPERATORS.sub(lambda m: f" {m.group(1)} ", text.replace("\xa0", " "))
    text = re.sub(r"[ \t]{2,}", " ", text)
    return "\n".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _converted(text: str) -> Iterator[tuple[Kind, str]]:
    for kind, piece in segments(text):
        yield kind, (math_to_text(piece) if kind in ("math", "display") else piece)


def _plain(text: str) -> str:
    """The converted text on plain lines: escapes dropped, display math on a line of its own."""
    out = []
    for kind, piece in _converted(text):
        if kind == "text":
            piece = re.sub(r"\\([$%&#_{}\\])", r"\1", piece)
        elif kind == "display":
            piece = f"{_LINE}{piece}{_LINE}"
        out.append(piece)
    joined = re.sub(f"[ \t]*\n?{_LINE}\n?[ \t]*", "\n", "".join(out))
    return joined.strip("\n") + ("\n" * (len(text) - len(text.rstrip("\n"))))


def latex_to_text(text: str, *, math: bool = False) -> str:
    """The LaTeX math in `text` as plain Unicode (`\\frac{a}{b}` → a/b, `\\times` → ×, `x^2` → x²).

    `math`: all of `text` is math (a final answer such as `\\frac{3}{4}` or `x^2 + 1`).
    """
    out = math_to_text(text) if math else _plain(text)
    return out.replace(BOX_OPEN, "").replace(BOX_CLOSE, "")


# -- showing it ---------------------------------------------------------------------------


def _styled(text: str, style: str = "") -> Text:
    """Converted text with its boxed answers in the answer style."""
    out = Text(style=style)
    for i, part in enumerate(re.split(f"[{BOX_OPEN}{BOX_CLOSE}]", text)):
        out.append(part, ANSWER_STYLE if i % 2 else "")
    return out


def readable_text(text: str, style: str = "") -> Text:
    """A reply on plain lines (no Markdown blocks): math converted, answers highlighted."""
    return _styled(re.sub(r"[ \t]*\n+[ \t]*", " ", _plain(text)).strip(), style)


_ESCAPE = re.compile(r"([\\`*_{}\[\]<>()#+!|~-])")
_ANSWER_THEME = Theme({"markdown.kbd": ANSWER_STYLE})


class _Reply(Markdown):
    """Rich's Markdown, with a boxed answer (written as <kbd>) in the answer style."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        with console.use_theme(_ANSWER_THEME):
            yield from super().__rich_console__(console, options)


def _markdown(text: str) -> str:
    """The Markdown source to render: math converted (and escaped), single newlines kept."""
    out: list[str] = []
    for kind, piece in _converted(text):
        if kind == "code":
            out.append(piece)
            continue
        if kind in ("math", "display"):
            piece = _ESCAPE.sub(r"\\\1", piece).replace(BOX_OPEN, "<kbd>").replace(BOX_CLOSE, "</kbd>")
            if kind == "display":  # a line of its own
                piece = f"{_LINE}{piece}{_LINE}"
        elif kind == "raw":
            piece = _ESCAPE.sub(r"\\\1", piece)
        out.append(piece)
    source = re.sub(f"\n?{_LINE}\n?", "\n", "".join(out))
    source = re.sub(r"\n{3,}", "\n\n", source.strip("\n"))
    # a model's single line break is a line break (Markdown would join the lines); code keeps its own
    parts = re.split(r"(^(?:```|~~~)[\s\S]*?(?:^(?:```|~~~)[^\n]*$|\Z))", source, flags=re.MULTILINE)
    return "".join(p if i % 2 else re.sub(r"(?<=[^\n])\n(?=[^\n])", "  \n", p) for i, p in enumerate(parts))


def readable(text: str, style: str = "none") -> RenderableType:
    """A reply's text for the screen: math as Unicode, Markdown styled, boxed answers highlighted."""
    return _Reply(_markdown(text), code_theme="ansi_dark", inline_code_lexer=None, style=style)
