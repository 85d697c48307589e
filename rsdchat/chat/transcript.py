"""The chat transcript: JSONL records with per-step provenance, saved, loaded and exported.

One JSON object per line, in the order things happened:

- ``session``: first line; the settings, the models and the knobs in force at the start;
- ``user``: a question (``turn`` counts from 1) and the system prompt it was sent with;
- ``step``: a step as the engine recorded it (author, text, mode, accepted, and for a
  judged draft its decision: reward, ω, u and the weighting with its parameters), the
  reward's bounds; rejected drafts included;
- ``change``: a setting changed, placed where it took effect, with the knobs after it;
- ``answer``: the end of a turn: the answer text, why it ended, the error if any, the
  final answer, acceptance counts and the cost per role.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rsdchat.chat.choice import Choice
from rsdchat.chat.records import record_problem
from rsdchat.core.decision import Decision
from rsdchat.core.errors import ConfigError
from rsdchat.core.trace import Acceptance, Ledger, Step, Trace, verdict_word
from rsdchat.files import Record, WriteError, write_atomic
from rsdchat.prompts import Turn

VERSION = 2
Seen = tuple[int, int, int]  # a file as it was read or written: (inode, size, modified in ns)


class TranscriptError(ConfigError):
    """A transcript file that cannot be read: the message names the file and line."""


class SaveError(ConfigError):
    """A transcript or export that could not be written (a full disk): nothing was changed (exit 1)."""

    exit_code = 1


def seen_of(status: os.stat_result) -> Seen:
    return (status.st_ino, status.st_size, status.st_mtime_ns)


def file_seen(path: Path) -> Seen | None:
    """How `path` is now (None: nothing there, or it cannot be seen)."""
    try:
        return seen_of(os.stat(path))
    except OSError:
        return None


def write_file(path: Path, text: str, *, replace: bool | Callable[[Path], bool], what: str = "") -> Path:
    """`rsdchat.files.write_atomic`, its failure said as a ConfigError (the chat shows both the same way)."""
    try:
        return write_atomic(path, text, replace=replace, what=what)
    except WriteError as exc:
        raise SaveError(str(exc)) from None


def now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def default_path(suffix: str) -> Path:
    """Where /save and /export write without a path: rsdchat-DATE-TIME.jsonl (or .md)."""
    return Path(f"rsdchat-{datetime.now():%Y%m%d-%H%M%S}{suffix}")


def user_record(
    turn: int, question: str, system: str, in_force: Record, retry_of: int | None = None
) -> Record:
    """A question, with the system prompt it was sent with and what was in force.

    `retry_of`: the turn this one asks again (/retry); that turn leaves the models' context.
    """
    record: Record = {
        "type": "user",
        "turn": turn,
        "content": question,
        "system": system,
        "in_force": in_force,
        "at": now(),
    }
    return record | ({"retry_of": retry_of} if retry_of is not None else {})


def retried_turns(records: list[Record]) -> set[int]:
    """The turns asked again with /retry."""
    return {r["retry_of"] for r in records if r["type"] == "user" and isinstance(r.get("retry_of"), int)}


def in_context(answer: Record, retried: set[int]) -> bool:
    """Whether the models see this answer in later questions.

    Not if it was asked again (/retry), nor if it was stopped (Esc) and not kept (/keep).
    """
    if answer.get("turn") in retried:
        return False
    return answer.get("finish_reason") != "cancelled" or bool(answer.get("kept"))


def step_record(turn: int, step: Step, bounds: tuple[float, float] | None) -> Record:
    """A step as the engine recorded it, with the scale of the reward that judged it."""
    record: Record = {"type": "step", "turn": turn, **step.to_dict()}
    record["reward_bounds"] = list(bounds) if bounds is not None and step.reward is not None else None
    record["cost"] = {role.value: asdict(usage) for role, usage in step.ledger.usage.items()}
    return record


def decision_of(record: Record) -> Decision | None:
    """The decision saved with a step record (None if it was not judged or cannot be read)."""
    saved = record.get("decision")
    if not isinstance(saved, dict):
        return None
    try:
        return Decision.from_dict(saved)
    except (ConfigError, KeyError, TypeError, ValueError):
        return None


def answer_record(turn: int, trace: Trace) -> Record:
    acceptance = trace.acceptance
    return {
        "type": "answer",
        "turn": turn,
        "content": trace.text,
        "finish_reason": trace.finish_reason,
        "steps": len(trace.answer_steps),
        "error": trace.error,
        "final_answer": trace.final_answer,
        "drafts": acceptance.judged,
        "accepted_drafts": acceptance.accepted,
        "seconds": round(trace.seconds, 4),
        "cost": trace.ledger.to_dict(),
    }


@dataclass
class Transcript:
    records: list[Record] = field(default_factory=list)
    path: Path | None = None  # where it was last saved to or loaded from
    saved: int = 0  # records already on disk at `path`
    seen: Seen | None = None  # the file at `path` as it was read
    cut: int | None = None  # the last line, cut short by a crash, that was left out when read

    @classmethod
    def start(cls, choice: Choice, models: dict[str, str]) -> Transcript:
        header = {
            "type": "session",
            "version": VERSION,
            "started": now(),
            "settings": choice.settings.model_dump(mode="json"),
            "models": models,
            "knobs": choice.to_dict(),
        }
        return cls([header])

    def add(self, record: Record) -> Record:
        self.records.append(record)
        return record

    @property
    def unsaved(self) -> bool:
        return len(self.records) > self.saved and any(r["type"] != "session" for r in self.records)

    @property
    def turns(self) -> int:
        return sum(1 for r in self.records if r["type"] == "user")

    def retried(self) -> set[int]:
        """The turns asked again with /retry."""
        return {
            r["retry_of"] for r in self.records if r["type"] == "user" and isinstance(r.get("retry_of"), int)
        }

    def history(self) -> list[Turn]:
        """Question and answer of every finished turn the models still see (see `in_context`)."""
        questions: dict[int, str] = {}
        retried = self.retried()
        turns = []
        for record in self.records:
            if record["type"] == "user":
                questions[record["turn"]] = record["content"]
            elif record["type"] == "answer" and record["turn"] in questions:
                question = questions.pop(record["turn"])
                if in_context(record, retried):
                    turns.append(Turn(question, record["content"]))
        return turns

    def last(self, kind: str) -> Record | None:
        """The last record of type `kind`."""
        return next((r for r in reversed(self.records) if r["type"] == kind), None)

    def keep_last(self) -> int:
        """/keep: the last answer, stopped, goes back into the models' context; its turn.

        ConfigError (one line) when there is nothing to keep."""
        last = self.last("answer")
        if last is None or last.get("finish_reason") != "cancelled":
            raise ConfigError("nothing to keep: only a stopped answer is left out of the context")
        if not str(last.get("content", "")).strip():
            raise ConfigError("nothing to keep: the stopped answer has no finished step")
        if last.get("kept"):
            raise ConfigError(f"turn #{last['turn']} is kept already")
        if last["turn"] in self.retried():
            raise ConfigError(f"turn #{last['turn']} was asked again: its answer stays out of the context")
        last["kept"] = True
        return int(last["turn"])

    def last_answer(self) -> str | None:
        """The text of the last answer that has any (for /copy)."""
        for record in reversed(self.records):
            if record["type"] == "answer" and str(record.get("content", "")).strip():
                return str(record["content"]).strip()
        return None

    def totals(self) -> tuple[Ledger, Acceptance]:
        """What the saved answers cost, and how many of the saved drafts were kept."""
        spent, acceptance = Ledger(), Acceptance()
        for record in self.records:
            if record["type"] == "answer" and isinstance(record.get("cost"), dict):
                spent.merge(Ledger.from_dict(record["cost"]))
            decision = decision_of(record) if record["type"] == "step" else None
            if decision is not None:
                acceptance += Acceptance(1, int(decision.accepted), int(decision.invalid))
        return spent, acceptance

    def other_models(self, current: dict[str, str]) -> list[str]:
        """'draft X (now Y)' for each role whose model differs from `current` (role → name)."""
        models = self.records[0].get("models") or {}
        return [
            f"{role} {models[role]} (now {current[role]})"
            for role in ("draft", "target")
            if models.get(role) and current.get(role) and models[role] != current[role]
        ]

    def chosen(self) -> Record | None:
        """What the chat chose, in force at the end of the transcript (`Choice.to_dict`)."""
        for record in reversed(self.records):
            if record["type"] in ("session", "change") and isinstance(record.get("knobs"), dict):
                knobs: Record = record["knobs"]
                return knobs
        return None

    def save(self, path: Path, *, replace: bool | Callable[[Path], bool] = False) -> Path:
        """Write the transcript to `path`, which becomes where it is saved; the path written.

        `replace`: whether a file already there may be replaced (see `write`).
        """
        path = self.write(path, replace=replace, what=", and is not this chat's own file")
        self.path, self.saved = path, len(self.records)
        return path

    def write(self, path: Path, *, replace: bool | Callable[[Path], bool] = False, what: str = "") -> Path:
        """Write a copy to `path` whole or not at all (`rsdchat.files.write_atomic`).

        A file already there is replaced only when `replace` says it is ours; a link, a device
        or a folder never is (TranscriptError, nothing written). A failed write (a full disk)
        leaves the old file as it was (SaveError).
        """
        text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in self.records)
        return write_file(path, text, replace=replace, what=what)

    @classmethod
    def load(cls, path: Path) -> Transcript:
        """Read a transcript; TranscriptError (one line: the file, the line, the field) if it cannot be.

        A last line without its newline that is not JSON was cut short by a crash: it is left
        out (`cut` says which line it was), not refused.
        """
        path = path.expanduser()
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise TranscriptError(f"{path} is not a regular file")
            with path.open("rb") as handle:
                seen = seen_of(os.fstat(handle.fileno()))
                data = handle.read()
        except OSError as exc:
            raise TranscriptError(f"cannot read {path}: {exc.strerror or exc}") from None
        records, cut = _read_records(path, data)
        if not records or records[0]["type"] != "session":
            raise TranscriptError(f"{path} is not an rsdchat transcript (no session line first)")
        if records[0].get("version") != VERSION:
            raise TranscriptError(
                f"{path}: transcript version {records[0].get('version')!r} is not supported"
                f" (this rsdchat reads version {VERSION})"
            )
        return cls(records, path, len(records), seen, cut)

    def to_markdown(self) -> str:
        return to_markdown(self.records)


def _read_records(path: Path, data: bytes) -> tuple[list[Record], int | None]:
    """The records of a transcript's bytes, and the number of a last line cut short (left out)."""
    lines = data.split(b"\n")
    records: list[Record] = []
    cut: int | None = None
    for number, raw in enumerate(lines, 1):
        last = number == len(lines)  # the bytes after the last newline: '' unless cut short
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            if last:
                cut = number
                break
            raise TranscriptError(f"{path}:{number}: not UTF-8 text; was the file edited?") from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if last:  # a crash cut the last line: what came before it is whole
                cut = number
                break
            raise TranscriptError(f"{path}:{number}: not JSON ({exc.msg})") from None
        problem = record_problem(record)
        if problem:
            raise TranscriptError(f"{path}:{number}: {problem}")
        records.append(record)
    return records, cut


def _step_caption(record: Record) -> str:
    parts = [f"step {record['index'] + 1}", str(record["author"])]
    decision = decision_of(record)
    if decision is not None:
        parts.append("reward not a number" if decision.invalid else f"r {decision.reward:.3g}")
        parts.append(f"ω {decision.omega:.3g}")
        parts.append(verdict_word(decision.accepted, sign=False))
        parts.append(decision.weighting.describe())
    elif isinstance(record.get("score"), int | float):
        parts.append(f"r {record['score']:.3g}")
    return " · ".join(parts)


def to_markdown(records: list[Record]) -> str:
    """A readable Markdown rendering: questions, steps with their provenance, answers."""
    lines = ["# rsdchat transcript", ""]
    retried = retried_turns(records)
    for record in records:
        kind = record["type"]
        if kind == "session":
            models = record.get("models") or {}
            shown = " · ".join(f"{k} **{v}**" for k, v in models.items())
            lines += [f"*{record.get('started', '')}* — {shown}", ""]
        elif kind == "user":
            again = f", asking turn {record['retry_of']} again" if record.get("retry_of") else ""
            lines += [f"## You (turn {record['turn']}{again})", "", record["content"].strip(), ""]
            lines += ["## rsdchat", ""]
        elif kind == "change":
            lines += [f"> ⚙ {record['text']}", ""]
        elif kind == "step":
            text = record["text"].strip() or "(empty)"
            caption = _step_caption(record)
            if record.get("accepted", True):
                lines += [f"<sub>{caption}</sub>", "", text, ""]
            else:
                fence = "~~~~" if "```" in text else "```"
                lines += [f"<details><summary>✗ {caption}</summary>", "", fence, text, fence]
                lines += ["", "</details>", ""]
        elif kind == "answer":
            if record.get("partial"):
                caption = f"step {int(record.get('partial_index') or 0) + 1} · {record.get('partial_author')}"
                lines += [f"<sub>{caption} · stopped while writing</sub>", "", record["partial"].strip(), ""]
            if record.get("final_answer"):
                lines += [f"**Answer: {record['final_answer']}**", ""]
            ended = f"ended: {record.get('finish_reason')}"
            if record.get("error"):
                ended += f" — {record['error']}"
            if record.get("drafts"):
                kept: Any = record.get("accepted_drafts")  # as saved (an old file may lack it)
                ended += f" · {Acceptance(record['drafts'], kept).describe('export')}"
            if not in_context(record, retried):
                ended += " · left out of the context"
            lines += [f"*{ended}*", ""]
    return "\n".join(lines).rstrip() + "\n"
