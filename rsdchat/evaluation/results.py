"""The results file of `rsdchat eval`: JSONL, one line per (question, method), on disk as they finish.

The first line describes the run (the settings that decide what the models write); every
other line is one result. Each line is written whole, flushed and fsynced, so a run
killed at any moment (even `kill -9`) leaves a file that the same command resumes: the
results already there are kept, a last line cut short is dropped, and only the missing
(question, method) pairs run. A file written with other settings is refused with a line
that names the first setting that differs.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from rsdchat.errors import ConfigError

VERSION = 1
Record = dict[str, Any]


def _flat(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def first_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """'delta: 0.7 in the file, 0.8 now' for the first setting that differs, else None."""
    before, after = dict(_flat(old)), dict(_flat(new))
    for key in sorted(before.keys() | after.keys()):
        if before.get(key) != after.get(key):
            return f"{key}: {before.get(key)!r} in the file, {after.get(key)!r} now"
    return None


class ResultsFile:
    """An open results file: what is already done, and a way to add a result durably."""

    def __init__(self, path: Path, config: Mapping[str, Any]) -> None:
        self.path = path.expanduser()
        self.config = dict(config)
        self.records: list[Record] = []
        self._handle: IO[str] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a+", encoding="utf-8")
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise ConfigError(f"results file {self.path} is in use by another rsdchat eval") from None
        except OSError as exc:
            self.close()
            raise ConfigError(f"cannot open results file {self.path}: {exc.strerror or exc}") from None
        try:
            self._read()
        except BaseException:
            self.close()
            raise

    def _read(self) -> None:
        assert self._handle is not None
        handle = self._handle
        handle.seek(0)
        text = handle.read()
        if text and not text.endswith("\n"):  # the last line was cut short (a kill mid-write)
            keep = text.rfind("\n") + 1
            handle.truncate(keep)
            text = text[:keep]
        lines = text.splitlines()
        if not lines:
            self._write({"type": "eval", "version": VERSION, "config": self.config})
            return
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("type") != "eval":
            raise ConfigError(f"{self.path} is not an rsdchat eval results file (its first line says so)")
        if header.get("version") != VERSION:
            raise ConfigError(
                f"{self.path}: results version {header.get('version')!r} (this rsdchat writes {VERSION})"
            )
        differs = first_difference(header.get("config", {}), self.config)
        if differs:
            raise ConfigError(
                f"{self.path} was written with other settings ({differs}); use another --output file"
            )
        for number, line in enumerate(lines[1:], 2):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise ConfigError(f"{self.path}:{number}: not a JSON line; was the file edited?") from None
            if isinstance(record, dict) and record.get("type") == "result":
                self.records.append(record)

    def done(self) -> set[tuple[str, str]]:
        """(question id, method) pairs already in the file."""
        return {(str(r.get("id")), str(r.get("method"))) for r in self.records}

    def add(self, record: Record) -> None:
        """Append one result, durably (flushed and fsynced before this returns)."""
        self._write({"type": "result", **record})
        self.records.append({"type": "result", **record})

    def _write(self, record: Record) -> None:
        if self._handle is None:
            raise ConfigError(f"results file {self.path} is closed")
        line = json.dumps(record, ensure_ascii=False, allow_nan=False)
        self._handle.seek(0, os.SEEK_END)
        self._handle.write(line + "\n")  # one write per line
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()  # releases the lock
            self._handle = None

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_results(path: Path) -> tuple[dict[str, Any], list[Record]]:
    """The config and the results of a finished (or stopped) run, read only."""
    try:
        lines = path.expanduser().read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read results file {path}: {exc.strerror or exc}") from None
    records: list[Record] = []
    config: dict[str, Any] = {}
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # cut short by a kill
            raise ConfigError(f"{path}:{number}: not a JSON line") from None
        if number == 1:
            if not isinstance(record, dict) or record.get("type") != "eval":
                raise ConfigError(f"{path} is not an rsdchat eval results file")
            config = record.get("config", {})
        elif isinstance(record, dict) and record.get("type") == "result":
            records.append(record)
    return config, records
