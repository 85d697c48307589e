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
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from rsdchat.errors import ConfigError
from rsdchat.jsonlines import dumps

VERSION = 1
Record = dict[str, Any]


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


class JsonLines:
    """A JSONL file that grows one whole, fsynced line at a time; one writer at a time (a lock).

    Opening it drops a last line cut short (a kill mid-write) and reads the lines before.
    """

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser()
        self.lines: list[Record] = []
        self._handle: IO[str] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a+", encoding="utf-8")
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise ConfigError(f"{self.path} is in use by another rsdchat") from None
        except OSError as exc:
            self.close()
            raise ConfigError(f"cannot open {self.path}: {exc.strerror or exc}") from None
        try:
            self._read()
        except BaseException:
            self.close()
            raise

    def _read(self) -> None:
        assert self._handle is not None
        handle = self._handle
        handle.seek(0)
        try:
            text = handle.read()
        except UnicodeDecodeError:
            raise ConfigError(f"{self.path} is not a text file") from None
        if text and not text.endswith("\n"):  # the last line was cut short (a kill mid-write)
            keep = text.rfind("\n") + 1
            handle.truncate(keep)
            text = text[:keep]
        for number, line in enumerate(text.splitlines(), 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise ConfigError(f"{self.path}:{number}: not a JSON line; was the file edited?") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{self.path}:{number}: not a JSON object")
            self.lines.append(record)

    def add(self, record: Record) -> None:
        """Append one line, durably (flushed and fsynced before this returns)."""
        if self._handle is None:
            raise ConfigError(f"{self.path} is closed")
        line = dumps(record)
        self._handle.seek(0, os.SEEK_END)
        self._handle.write(line + "\n")  # one write per line
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.lines.append(record)

    def keep_only(self, keep: Callable[[Record], bool]) -> None:
        """Rewrite the file with the lines `keep` accepts (atomically: all of them, or none changed)."""
        assert self._handle is not None
        kept = [line for line in self.lines if keep(line)]
        if len(kept) == len(self.lines):
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with tmp.open("w", encoding="utf-8") as out:
            out.writelines(dumps(line) + "\n" for line in kept)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)  # the lock stays on the old inode: take it on the new file
        self._handle.close()
        self._handle = self.path.open("a+", encoding="utf-8")
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.lines = kept

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()  # releases the lock
            self._handle = None

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResultsFile(JsonLines):
    """An eval results file: a header line with the run's settings, then one line per result."""

    def __init__(
        self, path: Path, config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
    ) -> None:
        self.config = dict(config)
        super().__init__(path)
        if not self.lines:
            self.add({"type": "eval", "version": VERSION, "config": self.config})
            return
        header = self.lines[0]
        if header.get("type") != "eval":
            self.close()
            raise ConfigError(f"{self.path} is not an rsdchat eval results file (its first line says so)")
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
        return {(str(r.get("id")), str(r.get("method"))) for r in self.records}

    def add_result(self, record: Record) -> None:
        self.add({"type": "result", **record})


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
