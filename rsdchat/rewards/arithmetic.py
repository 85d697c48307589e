"""Deterministic checker of the arithmetic written in one reasoning step.

Small models write GSM8K-style steps such as ``"She pays $12 x 3 = $36."`` or
``"\\(\\frac{10}{4} = 2.5\\)"``. `check_arithmetic` finds every claim ``EXPR = VALUE``
whose left side holds an operator, evaluates both sides with a tiny safe parser
(no ``eval``) and reports which claims hold. It never raises.

It is lenient where models are sloppy but right: a running total ``12 * 3 = 36 + 4``
is judged on its 36, ``50/200*100 = 25%`` and ``50/200 = 25%`` both hold, and a
rounded claim holds when it is the exact value rounded to the decimals it shows.
What it cannot read (variables, words like "half", huge powers, x/0) is skipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["ArithmeticReport", "Equation", "check_arithmetic"]


@dataclass(frozen=True)
class Equation:
    """One checked claim: `text` as written in the step, both values, whether it holds."""

    text: str
    lhs: float
    rhs: float
    correct: bool


@dataclass(frozen=True)
class ArithmeticReport:
    """The equations checked in one step."""

    equations: tuple[Equation, ...] = ()

    @property
    def checked(self) -> int:
        """How many equations were evaluated."""
        return len(self.equations)

    @property
    def wrong(self) -> int:
        """How many evaluated equations claim a wrong value."""
        return sum(not e.correct for e in self.equations)

    @property
    def reward(self) -> float:
        """Fraction of the equations that are correct; 1.0 when none was found."""
        return (self.checked - self.wrong) / self.checked if self.equations else 1.0


_Text = tuple[str, list[int], list[int]]  # text; source start and end of each char
_Repl = str | Callable[[re.Match[str]], str]
_SYMBOLS = {
    **dict.fromkeys(("\\times", "\\cdot", "\\ast", "×", "·", "⋅", "∗"), "*"),
    **dict.fromkeys(("\\div", "÷"), "/"),
    **dict.fromkeys(("\\approx", "≈", "≃"), "="),
    **dict.fromkeys(("−", "–"), "-"),
    **dict.fromkeys(("\\left", "\\right", "\\$", "$"), ""),
    **dict.fromkeys(("\\(", "\\)", "\\[", "\\]", "\\,", "\\;", "\\:", "\\!", "\\ ", "\\quad"), " "),
    **dict.fromkeys(("\\qquad", "\u00a0", "\u2009", "\u202f"), " "),
    **{"{": "(", "}": ")", "\\%": "%", "\\\\": "\n", "\r": "\n"},
}
_WORD_OPS = {"x": "*", "times": "*", "multiplied by": "*", "of": "*"}
_WORD_OPS |= {"divided by": "/", "plus": "+", "minus": "-"}
_BRACED: tuple[tuple[str, _Repl], ...] = (  # innermost braces first, until nothing changes
    (r"\\(?:boxed|text|textbf|textit|mathrm|mathbf|mbox)\s*\{([^{}]*)\}", r" \1 "),
    (r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"((\1)/(\2))"),
)
_RULES: tuple[tuple[str, _Repl], ...] = (
    (r"\{,\}", ","),
    (r"(?<=\d)(?:,|\\,)(?=\d{3}(?!\d))", ""),  # thousands separators
    (r"\\[a-zA-Z]+|\\.|[$\r×·⋅∗÷≈≃−–{}\u00a0\u2009\u202f]", lambda m: _SYMBOLS.get(m[0], m[0])),
    (r"([\d)])[ \t]*\*\*[ \t]*(?=[\d(])", r"\1^"),  # 2**3 is a power ...
    (r"\*\*|__", " "),  # ... any other ** is markdown bold
    (r"(?<=\d)\s*percent\b", "%"),
    (
        r"(?<=[\d%)])[ \t]*([xX]|times|multiplied by|divided by|plus|minus|of)\s*(?=[\d(.])",
        lambda m: f" {_WORD_OPS[m[1].lower()]} ",  # 3 x 4, 20% of 50, 1/2 of 8
    ),
)
_TOKEN = re.compile(
    r"(?P<num>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)|(?P<word>[^\W\d_]+)|(?P<ws>[ \t]+)"
    r"|(?P<eq>==?)|(?P<op>[-+*/^()%])|(?P<other>.)",
    re.DOTALL,
)
_BINOPS = tuple("+-*/^")
_LIMIT = 1e15  # larger values are not arithmetic a reasoning step checks
_WINDOW = 64  # tokens one side of an equation may span


def _sub(pattern: str, repl: _Repl, t: _Text) -> _Text:
    """`re.sub` that keeps, for each output char, the span of source it came from."""
    s, starts, ends = t
    out: list[str] = []
    new_starts: list[int] = []
    new_ends: list[int] = []
    pos = 0
    for m in re.finditer(pattern, s):
        a, b = m.span()
        r = m.expand(repl) if isinstance(repl, str) else repl(m)
        lo = starts[a] if a < len(s) else (ends[-1] if ends else 0)
        out += [s[pos:a], r]
        new_starts += [*starts[pos:a], *[lo] * len(r)]
        new_ends += [*ends[pos:a], *[ends[b - 1] if b > a else lo] * len(r)]
        pos = b
    return "".join([*out, s[pos:]]), new_starts + starts[pos:], new_ends + ends[pos:]


def _normalize(step: str) -> _Text:
    t: _Text = (step, list(range(len(step))), list(range(1, len(step) + 1)))
    for _ in range(20):
        before = t[0]
        for pattern, repl in _BRACED:
            t = _sub(pattern, repl, t)
        if t[0] == before:
            break
    for pattern, repl in _RULES:
        t = _sub(pattern, repl, t)
    return t


class _Tok(NamedTuple):
    kind: str  # num word eq op other end
    text: str
    start: int
    end: int
    space: bool  # whitespace right before it


_END = _Tok("end", "", 0, 0, True)


def _tokenize(s: str) -> list[_Tok]:
    toks: list[_Tok] = []
    space = False
    for m in _TOKEN.finditer(s):
        if m.lastgroup != "ws":
            toks.append(_Tok(m.lastgroup or "other", m[0], m.start(), m.end(), space))
        space = m.lastgroup == "ws"
    return [*toks, _END]


def _ok(v: float) -> float:
    if not math.isfinite(v) or abs(v) > _LIMIT:
        raise ValueError(v)
    return v


class _Parser:
    """Recursive descent over a token slice; `binop` records a binary operator."""

    def __init__(self, toks: list[_Tok]) -> None:
        self.toks, self.i, self.binop = [*toks, _END], 0, False

    def _take(self, ops: str) -> str | None:
        t = self.toks[self.i]
        if t.kind == "op" and t.text in ops:
            self.i += 1
            return t.text
        return None

    def expr(self) -> float:
        v = self._product()
        while op := self._take("+-"):
            self.binop = True
            r = self._product()
            v = v + r if op == "+" else v - r
        return v

    def _product(self) -> float:
        v = self._unary()
        while True:
            t = self.toks[self.i]
            op = "*" if t.text == "(" and not t.space else self._take("*/")  # 2(3 + 4)
            if not op:
                return v
            self.binop = True
            r = self._unary()
            v = v * r if op == "*" else v / r

    def _unary(self) -> float:
        return -self._unary() if self._take("-") else self._power()

    def _power(self) -> float:
        base = self._atom()
        while self._take("%"):
            base /= 100
        if not self._take("^"):
            return base
        self.binop = True
        exp = self._unary()
        if exp != int(exp) or abs(exp) > 64:
            raise ValueError(exp)
        return base ** int(exp)

    def _atom(self) -> float:
        t = self.toks[self.i]
        self.i += 1
        if t.text == "(":
            v = self.expr()
            if not self._take(")"):
                raise ValueError(")")
            return v
        if t.kind != "num":
            raise ValueError(t.text)
        unit = self.toks[self.i]
        if unit.kind == "word" and len(unit.text) > 1:
            self.i += 1  # "5 dollars", "3kg"; a one-letter word is a variable
        return _ok(float(t.text))


def _parse(toks: list[_Tok]) -> tuple[float, bool] | None:
    p = _Parser(toks)
    try:
        v = _ok(p.expr())
    except (ValueError, ArithmeticError):
        return None
    return (v, p.binop) if p.i == len(toks) else None


def _binary(toks: list[_Tok], k: int) -> bool:
    """Whether the operator at `k` has an operand on its left, so is binary."""
    prev = toks[k - 1] if k > 0 else _END
    if prev.kind not in ("num", "word") and prev.text not in (")", "%"):
        return False
    if prev.kind != "word" or toks[k].text != "-":
        return True
    return len(prev.text) == 1 or toks[k + 1].space or (k >= 2 and toks[k - 2].kind == "num")


def _clock(toks: list[_Tok], k: int) -> bool:
    """Whether token `k` is the colon of a time like 2:30 (not a number to check)."""
    glued = 0 < k < len(toks) - 1 and not toks[k].space and not toks[k + 1].space
    return glued and toks[k].text == ":" and toks[k - 1].kind == toks[k + 1].kind == "num"


def _lhs(toks: list[_Tok], lo: int, e: int) -> tuple[int, float, bool] | None:
    """Longest expression ending right before the `=` at `e`; None if truncated."""
    for s in range(max(lo, e - _WINDOW), e):
        if toks[s].text == "-" and (_binary(toks, s) or toks[s + 1].space):
            continue  # a binary minus or a "- " bullet does not start the expression
        parsed = _parse(toks[s:e])
        if parsed is not None:
            if s > 0 and ((toks[s - 1].text in _BINOPS and _binary(toks, s - 1)) or _clock(toks, s - 1)):
                return None  # "x - 3 + 2 = 6", "2:30 + 3": only part of what is written
            return s, *parsed
    return None


def _claims(seg: list[_Tok], v: float, end: int) -> list[tuple[float, int | None, int]]:
    """Values a plain number may claim, with the decimals it shows and its end token."""
    nums = [t.text for t in seg if t.kind == "num"]
    d = len(nums[0].partition(".")[2]) if len(nums) == 1 else None
    if any(t.text == "%" for t in seg):  # 50/200 = 25% and 50/200*100 = 25% both hold
        return [(v, None if d is None else d + 2, end), (v * 100, d, end)]
    return [(v, d, end)]


def _rhs(toks: list[_Tok], s: int, hi: int) -> list[tuple[float, int | None, int]]:
    """Candidate claimed values right after the `=` at `s - 1` (empty if unreadable)."""
    for e in range(min(hi, s + _WINDOW), s, -1):
        parsed = _parse(toks[s:e])
        if parsed is None:
            continue
        if toks[e].text in _BINOPS or _clock(toks, e):
            return []  # "= 36 / x", "= 5:30": truncated
        if not parsed[1]:
            return _claims(toks[s:e], parsed[0], e)
        for e2 in range(e - 1, s, -1):  # a running total: 12 * 3 = 36 + 4 = 40
            lead = _parse(toks[s:e2])
            if lead is not None and not lead[1]:
                return [(parsed[0], None, e), *_claims(toks[s:e2], lead[0], e2)]
        return [(parsed[0], None, e)]
    return []


def _matches(x: float, c: float, d: int | None, rel_tol: float, abs_tol: float) -> bool:
    """`c` is `x` within tolerance, or `x` rounded to the `d` decimals `c` shows (ties either way)."""
    close = math.isclose(x, c, rel_tol=rel_tol, abs_tol=abs_tol)
    return close or (d is not None and abs(x - c) <= 0.5 * 10.0**-d * (1 + 1e-9) + 1e-12)


def _find(step: str, rel_tol: float, abs_tol: float) -> list[Equation]:
    text, starts, ends = _normalize(step)
    toks = _tokenize(text)
    eqs = [i for i, t in enumerate(toks) if t.kind == "eq"]
    found: list[Equation] = []
    live = False  # the previous link had a readable left side: a chain a + b = c = d
    for n, e in enumerate(eqs):
        lo = eqs[n - 1] + 1 if n else 0
        left = _lhs(toks, lo, e)
        live = left is not None and (left[2] or (live and left[0] == lo))
        cands = _rhs(toks, e + 1, eqs[n + 1] if n + 1 < len(eqs) else len(toks) - 1)
        if left is None or not live or not cands:
            continue
        hits = [c for c in cands if _matches(left[1], c[0], c[1], rel_tol, abs_tol)]
        rhs, _, end = (hits or cands)[0]
        while end - 1 > e + 1 and toks[end - 1].kind == "word":
            end -= 1  # leave a trailing unit out of the quoted text
        src = step[starts[toks[left[0]].start] : ends[toks[end - 1].end - 1]]
        found.append(Equation(src, left[1], rhs, bool(hits)))
    return found


def check_arithmetic(step: str, *, rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> ArithmeticReport:
    """Check every ``EXPR = VALUE`` claim written in `step`; never raises.

    A claim counts when its left side has an operator (``x = 5`` and ``Total = 5`` are
    skipped) or continues a chain ``a + b = c = d``. The claimed value is correct when
    it is within `rel_tol`/`abs_tol` of the exact value, or equals the exact value
    rounded to the decimals the claim shows (``10/3 = 3.33``, not ``= 4``).
    """
    try:
        return ArithmeticReport(tuple(_find(step, rel_tol, abs_tol)))
    except Exception:  # a safety net: a reward must never crash the decoder
        return ArithmeticReport()
