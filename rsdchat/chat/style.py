"""Whether a question asks for math (worked step by step to a \\boxed{} answer) or open-ended chat.

Pure and cheap: a chat whose style is left on auto asks `looks_like_math` of every question, and
the style in force (`rsdchat.in_force.chat_style`) follows it.
"""

from __future__ import annotations

import re

_LATEX = re.compile(r"\\(boxed|frac|sqrt|int|sum|cdot|times|div|pi|le|ge|neq)\b|\$[^$\n]+\$|\\\(|\\\[")
_NUMBER = r"(?:\d+(?:[.,]\d+)?)"
_TERM = rf"(?:{_NUMBER}|[a-zA-Z]\b|\d*[a-zA-Z]\^?\d*|\))"
_OPERATION = re.compile(rf"{_NUMBER}\s*(?:[-+*/×÷^]|\*\*)\s*(?:{_NUMBER}|[a-z]\b|\()")  # 3 + 4, 2*x, 6/(
_EQUATION = re.compile(rf"{_TERM}\s*(?:=|<=|>=|≤|≥|<|>)\s*-?{_TERM}")  # 2x+3=7, y = 3, x ≥ 2
_PERCENT = re.compile(rf"{_NUMBER}\s*%")
_WORDS = re.compile(
    r"\b(solve|equations?|integrals?|integrate|derivatives?|differentiate|simplify|factori[sz]e|"
    r"polynomials?|prove that|theorem|probability|remainder|divisible|prime factors?|square roots?|"
    r"cube roots?|logarithms?|gcd|lcm|least common multiple|greatest common divisor|arithmetic mean)\b",
    re.IGNORECASE,
)
_COMPUTE = re.compile(
    r"\b(calculate|compute|evaluate|how many|how much|how long|how far|how old|what is the (sum|product|"
    r"difference|total|average|ratio|area|perimeter|volume|value)|times|divided by|plus|minus|"
    r"multiplied by|per cent|percent|average|in total|altogether|left over|prime|even or odd|speed|"
    r"faster|cost|costs|earn|pay|spend|change back)\b",
    re.IGNORECASE,
)

_ASKS = re.compile(r"\?|\b(what|find|how|which|when will)\b", re.IGNORECASE)


def looks_like_math(question: str) -> bool:
    """Whether `question` asks for a calculation or a proof rather than prose.

    Math: LaTeX (\\boxed, $x^2$), arithmetic between numbers (3 + 4, 2*x), an equation or
    inequality (2x+3=7), a percentage, a math word (solve, integral, probability, …), or a
    number with a word that asks to compute (how many, calculate, divided by, …), or two numbers
    in a question (a word problem). Anything
    else — a haiku, an email, an explanation, even one mentioning "500 km" — is chat.
    """
    if _LATEX.search(question) or _WORDS.search(question):
        return True
    if _OPERATION.search(question) or _PERCENT.search(question):
        return True
    if _EQUATION.search(question) and re.search(r"\d", question):
        return True
    numbers = re.findall(_NUMBER, question)
    if numbers and _COMPUTE.search(question):
        return True
    return len(numbers) >= 2 and bool(_ASKS.search(question))  # a word problem: two quantities and a question
