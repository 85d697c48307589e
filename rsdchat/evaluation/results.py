"""The results file of `rsdchat eval`: JSONL, one line per (question, method), on disk as they finish.

The first line describes the run (the settings that decide what the models write); every
other line is one result. Each line is written whole, flushed and fsynced, so a run
killed at any moment (even `kill -9`) leaves a file that the same command resumes: the
results already there are kept, a last line cut short is dropped, and only the missing
(question, method) pairs run. A file written with other settings is refused with a line
that names the first setting that differs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rsdchat.core.errors import ConfigError
from rsdchat.evaluation.data import Problem
from rsdchat.files import JsonLines, Record, read_jsonl

VERSION = 1


def _flat(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def first_difference(
    old: Mapping[str, Any], new: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> str | None:
    """'delta: 0.7 in the file, 0.8 now' for the first setting that differs, else None.

    A setting the file does not name (it is newer than the file) matches its value in
    `defaults`: files from before it was added behaved as the default does.
    """
    before, after, default = dict(_flat(old)), dict(_flat(new)), dict(_flat(defaults or {}))
    for key in sorted(before.keys() | after.keys()):
        if key not in before and key in default and after.get(key) == default[key]:
            continue
        if before.get(key) != after.get(key):
            return f"{key}: {before.get(key)!r} in the file, {after.get(key)!r} now"
    return None


def _line_problem(record: Record) -> str | None:
    """What is wrong with one line of a results file (None: nothing)."""
    if record.get("type") == "result":
        for key in ("id", "method"):
            if not isinstance(record.get(key), str | int) or isinstance(record.get(key), bool):
                return f"a result without its {key!r}; was the file edited?"
    return None


def _not_results(records: list[Record]) -> str | None:
    """Why `records` are not an eval results file (None: they are, or the file is empty)."""
    if records and records[0].get("type") != "eval":
        return "is not an rsdchat eval results file (its first line is not an eval header)"
    return None


def key(record: Record) -> tuple[str, str]:
    """(question id, method) of a result."""
    return str(record["id"]), str(record["method"])


class ResultsFile(JsonLines):
    """An eval results file: a header line with the run's settings, then one line per result.

    A file that is not one is refused before anything is written to it.
    """

    def __init__(
        self, path: Path, config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
    ) -> None:
        self.config = dict(config)
        super().__init__(path, ours=_not_results, check=_line_problem)
        if not self.lines:
            self.add({"type": "eval", "version": VERSION, "config": self.config})
            return
        header = self.lines[0]
        if header.get("version") != VERSION:
            self.close()
            raise ConfigError(
                f"{self.path}: results version {header.get('version')!r} (this rsdchat writes {VERSION})"
            )
        differs = first_difference(header.get("config", {}), self.config, defaults)
        if differs:
            self.close()
            raise ConfigError(
                f"{self.path} was written with other settings ({differs}); use another --output file"
            )

    @property
    def records(self) -> list[Record]:
        return [line for line in self.lines if line.get("type") == "result"]

    def done(self) -> set[tuple[str, str]]:
        """(question id, method) pairs already in the file."""
        return {key(r) for r in self.records}

    def drop_changed(self, problems: Iterable[Problem]) -> int:
        """Drop the results of questions whose text or reference changed since; how many went.

        A result is keyed by its question's id and content (`Problem.key`): an edited question
        runs again. Results written before keys existed are compared by their reference.
        """
        current = {p.id: p for p in problems}

        def unchanged(record: Record) -> bool:
            problem = current.get(str(record.get("id"))) if record.get("type") == "result" else None
            if problem is None:
                return True
            if "question_key" in record:
                return bool(record["question_key"] == problem.key)
            return bool(record.get("reference") == problem.reference)

        before = len(self.lines)
        self.keep_only(unchanged)
        return before - len(self.lines)

    def add_result(self, record: Record) -> None:
        self.add({"type": "result", **record})


def read_results(path: Path) -> tuple[dict[str, Any], list[Record]]:
    """The config and the results of a finished (or stopped) run, read only."""
    lines = read_jsonl(path, check=_line_problem)
    problem = _not_results(lines) if lines else "is empty"
    if problem:
        raise ConfigError(f"{path} {problem}")
    config = lines[0].get("config")
    return (config if isinstance(config, dict) else {}), [r for r in lines if r.get("type") == "result"]
