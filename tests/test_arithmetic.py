"""The arithmetic checker on steps written the way small models write GSM8K solutions."""

from __future__ import annotations

import operator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsdchat.rewards.arithmetic import ArithmeticReport, Equation, _find, check_arithmetic

# (step, the correctness of each equation found, in order)
CASES: list[tuple[str, list[bool]]] = [
    # plain GSM8K steps, and the same with the last number changed
    ("Natalia sold 48/2 = 24 clips in May.", [True]),
    ("Natalia sold 48/2 = 26 clips in May.", [False]),
    ("Natalia sold 48 + 24 = 72 clips altogether in April and May.", [True]),
    ("Natalia sold 48 + 24 = 82 clips altogether in April and May.", [False]),
    ("Weng earns 12/60 = $0.2 per minute. Working 50 minutes, she earned 0.2 x 50 = $10.", [True, True]),
    ("Weng earns 12/60 = $0.2 per minute. Working 50 minutes, she earned 0.2 x 50 = $12.", [True, False]),
    (
        "Betty has 100 / 2 = $50. Her grandparents gave her 15 * 2 = $30. "
        "She needs 100 - 50 - 30 - 15 = $5 more.",
        [True, True, True],
    ),
    (
        "Betty has 100 / 2 = $50. Her grandparents gave her 15 * 2 = $30. "
        "She needs 100 - 50 - 30 - 15 = $15 more.",
        [True, True, False],
    ),
    ("First, 3 + 5 = 8.\nThen, 8 * 2 = 17.\nSo the answer is 17.", [True, False]),
    ("He earns (8 + 4) * 15 = $180 a week.", [True]),
    ("The temperature changes by 20 - 25 = -5 degrees.", [True]),
    ("5 dollars + 3 dollars = 8 dollars", [True]),
    ("He runs 3 times 4 = 12 miles.", [True]),
    ("She bought 4 × 6 = 24 apples and gave each friend 24 ÷ 3 = 8.", [True, True]),
    ("- 3 + 4 = 7 cats\n- 7 * 2 = 14 paws", [True, True]),
    ("Each box holds 2(3 + 4) = 14 pens.", [True]),
    # chains and both sides
    ("So 5 * 4 * 3 = 20 * 3 = 60 muffins.", [True, True]),
    ("Albert ate 2 * 16 = 32 = 30 slices.", [True, False]),
    ("He has 12 * 3 = 36 + 4 = 40 eggs.", [True, True]),
    ("7 + 5 = 6 + 5", [False]),
    ("Total cost = 4 * 3 = 12 dollars", [True]),
    # LaTeX
    ("\\( 12 \\times 3 = 36 \\)", [True]),
    ("Each friend gets \\(\\frac{24}{4} = 6\\) cookies.", [True]),
    ("\\[ \\dfrac{3}{4} \\cdot 80 = 65 \\]", [False]),
    ("$$2 \\cdot 15 + 10 = 40$$", [True]),
    ("So the answer is 3 + 4 = \\boxed{7}.", [True]),
    ("So the answer is 3 + 4 = \\boxed{8}.", [False]),
    ("\\$1.50 \\times 4 = \\$6.00", [True]),
    ("$2^{10} = 1024$ and $3^4 = 80$", [True, False]),
    ("\\frac{3}{4} \\times 100 = 75\\%", [True]),
    ("\\(1{,}200 \\div 4 = 300\\)", [True]),
    # percents
    ("The discount is 20% of 50 = 10 dollars.", [True]),
    ("The discount is 20% of $80 = $18.", [False]),
    ("She spent 30 / 120 = 25% of her money.", [True]),
    ("30 / 120 * 100 = 25%", [True]),
    ("The tip is 15% * $40 = $6.", [True]),
    # thousands separators and money
    ("The house costs $250,000 + $50,000 = $300,000.", [True]),
    ("He earns 1,200 * 12 = 14,000 a year.", [False]),
    ("She pays $1.25 * 8 = $10.00 in total.", [True]),
    # rounding written by the model
    ("Each pays 100 / 3 = 33.33 dollars.", [True]),
    ("10 / 3 = 3.3", [True]),
    ("10 / 3 = 4", [False]),
    ("22 / 7 ≈ 3.14", [True]),
    ("22 / 7 = 3.15", [False]),
    ("Each gets 1 / 8 = 0.12 of the pie, or 1 / 8 = 0.13 rounded up.", [True, True]),  # a tie
    # markdown and powers
    ("**Step 2:** Multiply: 12 * 3 = **36** eggs.", [True]),
    ("The area is 5**2 = 25 square feet.", [True]),
    ("The area is 5^2 = 20 square feet.", [False]),
    # nothing to check
    ("First, we need to find how many apples are left.", []),
    ("The answer is \\boxed{18}.", []),
    ("Let x = 5. Then x + 3 = 8, so 2x = 16.", []),
    ("Total = 5 apples", []),
    ("x - 3 + 2 = 6", []),
    ("5 / 0 = 0", []),
    ("10^400 = 1", []),
    ("He starts at 2:30 and works 3 hours, so 2:30 + 3 = 5:30.", []),
    ("", []),
]


@pytest.mark.parametrize(("step", "expected"), CASES)
def test_steps(step: str, expected: list[bool]) -> None:
    report = check_arithmetic(step)
    assert [e.correct for e in report.equations] == expected
    assert report.checked == len(expected)
    assert report.wrong == expected.count(False)
    assert report.reward == (expected.count(True) / len(expected) if expected else 1.0)


def test_equation_fields() -> None:
    report = check_arithmetic("She buys 12 * 3 = 36 eggs, then eats 36 - 4 = 30 of them.")
    assert report.equations == (
        Equation(text="12 * 3 = 36", lhs=36.0, rhs=36.0, correct=True),
        Equation(text="36 - 4 = 30", lhs=32.0, rhs=30.0, correct=False),
    )
    assert report.reward == 0.5


def test_text_is_quoted_from_the_source() -> None:
    (eq,) = check_arithmetic("He pays \\$1,200 \\times 3 = \\$3,600 in rent.").equations
    assert eq.text == "1,200 \\times 3 = \\$3,600"
    assert (eq.lhs, eq.rhs, eq.correct) == (3600.0, 3600.0, True)


def test_percent_claim_reports_the_matching_value() -> None:
    (eq,) = check_arithmetic("50 / 200 = 25%").equations
    assert (eq.lhs, eq.rhs, eq.correct) == (0.25, 0.25, True)


def test_empty_report() -> None:
    report = ArithmeticReport(())
    assert (report.checked, report.wrong, report.reward) == (0, 0, 1.0)


def test_tolerance_is_configurable() -> None:
    assert check_arithmetic("1000 * 3 = 3000.2").reward == 1.0  # within rel_tol 1e-4
    assert check_arithmetic("1000 * 3 = 3000.2", rel_tol=1e-9).reward == 0.0


_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


@given(
    a=st.integers(0, 10**6),
    b=st.integers(0, 10**6),
    op=st.sampled_from(sorted(_OPS)),
    commas=st.booleans(),
    money=st.booleans(),
)
def test_generated_equations(a: int, b: int, op: str, commas: bool, money: bool) -> None:
    result = _OPS[op](a, b)
    off = max(1, abs(result) // 1000 + 1)  # far enough to fail rel_tol
    fmt = "{:,}" if commas else "{}"
    cur = "$" if money else ""
    left = f"So {cur}{fmt.format(a)} {op} {cur}{fmt.format(b)} = "
    if result < 0:
        cur = "-" + cur
    right = f"{cur}{fmt.format(abs(result))}"
    wrong = f"{'-' if result + off < 0 else ''}{fmt.format(abs(result + off))}"
    assert [e.correct for e in check_arithmetic(left + right + " apples.").equations] == [True]
    assert [e.correct for e in check_arithmetic(left + wrong + " apples.").equations] == [False]


@given(a=st.integers(1, 10**4), b=st.integers(1, 10**4), decimals=st.integers(0, 4))
def test_rounded_quotients(a: int, b: int, decimals: int) -> None:
    claim = f"{a / b:.{decimals}f}"
    assert check_arithmetic(f"{a} / {b} = {claim}").reward == 1.0


_ALPHABET = [
    *"0123456789 +-*/^=()%.,$xX\n{}\\×÷·≈−",
    "\\frac{",
    "\\times",
    "\\boxed{",
    "**",
    " of ",
    "1,000",
    "\\(",
    "\\)",
    " dollars",
    "2^99",
    "/0",
    "((((",
]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(st.sampled_from(_ALPHABET), max_size=60).map("".join)))
def test_fuzz_never_raises(step: str) -> None:
    _find(step, 1e-4, 1e-6)  # the parser itself copes, not only check_arithmetic's safety net
    report = check_arithmetic(step)
    assert 0.0 <= report.reward <= 1.0
    assert 0 <= report.wrong <= report.checked == len(report.equations)
    for eq in report.equations:
        assert eq.text in step
