"""Final-answer extraction and grading.

`extract_answer` is pure and dependency-free: it runs on every solve. `is_correct`
grades with HuggingFace's `math-verify` (its `parse` and `verify`), imported lazily,
and adds a numeric check with relative tolerance 1e-4.

Timeouts: math-verify guards parsing and comparison with `signal.alarm`, which only
works in the main thread (elsewhere it raises). `is_correct` therefore passes
`parsing_timeout`/`timeout_seconds` of 5 s when called from the main thread and
`None` (no timeout) from any other thread. To bound the time without a timeout,
math-verify sees at most the last `MAX_VERIFY_CHARS` characters of a prediction
(milliseconds on real outputs, under ~0.1 s on adversarial ones).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from fractions import Fraction
from functools import lru_cache
from typing import Any

from rsdchat.core.answers import last_boxed

REL_TOL = 1e-4
TIMEOUT_S = 5
MAX_VERIFY_CHARS = 2000  # math-verify is quadratic on some long inputs
MAX_PHRASE_CHARS = 120  # longest answer taken after "the answer is"
SHORT = 200  # a prediction this short may be a bare answer such as "\\pi"

_PHRASE = re.compile(r"the\s+(?:final\s+)?answer\s+is\b|\banswer\s*[:：]|####", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_NUM = r"[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_FRAC = r"\\[dt]?frac\{[-−]?\d+\}\{\d+\}"
_NUMBER = re.compile(rf"{_FRAC}|(?<![\w.]){_NUM}(?:/\d+)?")
_NUMBER_ONLY = re.compile(rf"\\?[$€£]?\s*({_NUM}(?:/\d+)?)\s*(?:%|\\%)?(?:\s+[A-Za-z][A-Za-z ]*)?")
_THOUSANDS = re.compile(r"[-−]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def extract_answer(text: str) -> str | None:
    """The final answer in a model's output, or None if it states none.

    In order: the content of the last brace-balanced ``\\boxed{...}`` (or
    ``\\fbox``); else the text after the last "the answer is", "answer:" or "####"
    (to the end of its sentence, at most `MAX_PHRASE_CHARS`, a plain number reduced to
    the number); else the last number in the text. Thousands separators are removed from plain numbers.
    """
    boxed = last_boxed(text)
    if boxed is not None:
        return _tidy_number(boxed)
    phrase = _after_phrase(text)
    if phrase is not None:
        return phrase
    numbers = _NUMBER.findall(text)
    return _tidy_number(numbers[-1]) if numbers else None


_CHOICE = re.compile(r"^\(?([A-J])(?:\)|\.|:|\s|$)")
_CHOICE_ANYWHERE = re.compile(r"\(([A-J])\)|\b([A-J])\)")


def extract_choice(text: str, n_choices: int) -> str | None:
    """The letter a multiple-choice reply picks (A … the n-th letter), or None.

    In order: a letter boxed (``\\boxed{B}``, ``\\boxed{(B)}``, ``\\boxed{B) 42}``); a letter after
    "the answer is" or "answer:"; else the last "(B)" or "B)" in the text.
    """
    valid = "ABCDEFGHIJ"[:n_choices]

    def letter(candidate: str | None) -> str | None:
        if candidate is None:
            return None
        found = _CHOICE.match(candidate.strip().strip("$").replace("\\text{", "").strip("{} ").upper())
        return found.group(1) if found and found.group(1) in valid else None

    for candidate in (last_boxed(text), _after_phrase(text)):
        chosen = letter(candidate)
        if chosen is not None:
            return chosen
    picked = [a or b for a, b in _CHOICE_ANYWHERE.findall(text)]
    picked = [x for x in picked if x in valid]
    return picked[-1] if picked else None


def answer_key(answer: str) -> str:
    """What two answers must share to count as the same vote: the number, else the tidied text."""
    number = _as_number(answer)
    return repr(round(number, 6)) if number is not None else _normalise(answer)


def grade(prediction_text: str, reference: str, choices: int = 0) -> bool:
    """`is_correct`, or for a multiple-choice problem with `choices` options, the letter picked."""
    if choices:
        return extract_choice(prediction_text, choices) == reference.strip().upper()
    return is_correct(prediction_text, reference)


def is_correct(prediction_text: str, reference: str) -> bool:
    """Whether `prediction_text` (a whole model output or an answer) matches `reference`.

    True if its extracted answer equals the reference as a number (relative tolerance
    1e-4), or if math-verify finds the two equivalent (the reference is parsed as
    ``\\boxed{reference}``; the prediction whole, as its extracted answer boxed and,
    when short, as a bare answer boxed).
    The extracted answer also counts as correct when it equals the reference as text
    (case, $ and spaces aside), which covers references math-verify cannot parse
    and the case where math-verify is not installed. Never raises.
    """
    try:
        return _is_correct(prediction_text, reference)
    except Exception:  # grading must never break a run
        return False


def _is_correct(prediction_text: str, reference: str) -> bool:
    reference = reference.strip()
    if not reference or not prediction_text.strip():
        return False
    predicted = extract_answer(prediction_text)
    if predicted is not None and _same_number(predicted, reference):
        return True
    if _normalise(reference) in (_normalise(prediction_text), _normalise(predicted or "")):
        return True
    timeout = TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    gold = _parse_gold(reference, timeout)
    if gold is None:
        return False
    math_verify = _math_verify()
    candidates = [prediction_text[-MAX_VERIFY_CHARS:]]  # the answer is at the end
    if predicted is not None and len(predicted) <= MAX_VERIFY_CHARS:
        candidates.append(f"\\boxed{{{predicted}}}")
    if len(prediction_text) <= SHORT and "\\boxed" not in prediction_text:
        candidates.append(f"\\boxed{{{prediction_text.strip()}}}")  # a bare answer
    for candidate in candidates:
        parsed = math_verify.parse(candidate, parsing_timeout=timeout)
        if parsed and math_verify.verify(gold, parsed, timeout_seconds=timeout):
            return True
    return False


def _math_verify() -> Any:
    """The math_verify module (imported on first use: it loads sympy), or None."""
    try:
        import math_verify
    except ImportError:
        return None
    return math_verify


@lru_cache(maxsize=4096)
def _parse_gold(reference: str, timeout: int | None) -> list[Any] | None:
    """math-verify's parse of a gold answer; None if unavailable or unparseable."""
    math_verify = _math_verify()
    if math_verify is None:
        return None
    text = reference if "\\boxed" in reference else f"\\boxed{{{reference}}}"
    parsed: list[Any] = math_verify.parse(text, parsing_timeout=timeout)
    return parsed or None


def _after_phrase(text: str) -> str | None:
    """The answer stated after the last answer phrase, or None."""
    matches = list(_PHRASE.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].split("\n", 1)[0]
    rest = _SENTENCE_END.split(rest, 1)[0].strip(" \t:*")
    rest = rest.strip().strip("$").strip().rstrip(".").strip()
    if not rest or len(rest) > MAX_PHRASE_CHARS:  # a long sentence is not an answer
        return None
    number = _NUMBER_ONLY.fullmatch(rest)
    return _tidy_number(number.group(1)) if number else rest


def _tidy_number(text: str) -> str:
    """Drop thousands separators and use ASCII minus in a plain number."""
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    return text.replace("−", "-") if re.fullmatch(_NUM + r"(?:/\d+)?", text) else text


def _as_number(text: str) -> float | None:
    """`text` as a number if it is one: "18", "-1,000.5", "$18", "1/2", "50%"."""
    text = text.strip().strip("$").replace("\\$", "").replace("\\%", "%").strip()
    text = text.replace(",", "").replace("−", "-").rstrip("%").strip()
    frac = re.fullmatch(r"\\[dt]?frac\{(-?\d+)\}\{(\d+)\}", text)
    if frac:
        text = f"{frac.group(1)}/{frac.group(2)}"
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None


def _same_number(predicted: str, reference: str) -> bool:
    """Both are plain numbers within relative tolerance `REL_TOL`."""
    a, b = _as_number(predicted), _as_number(reference)
    return a is not None and b is not None and math.isclose(a, b, rel_tol=REL_TOL)


def _normalise(text: str) -> str:
    """Case-folded text without $, a trailing full stop or extra spaces."""
    return " ".join(text.replace("$", "").strip().rstrip(".").casefold().split())


class _DropTimeoutNotices(logging.Filter):
    """Hide math-verify's timeout warnings: one says timeouts are off (our choice, see
    above), the other quotes the whole model output; either way the answer is graded
    False."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Timeout is disabled", "Timeout during"))


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutNotices())
