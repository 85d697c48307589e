"""The draft's own steps on questions with gold answers, labelled automatically, two ways.

The draft answers each question alone, greedily. Its steps are then labelled either by its
final answer (`ANSWER`: outcome supervision, as in Yu et al.'s outcome-supervised value
models: every step of a right answer is `good`, every step of a wrong one `bad`; only the
draft runs) or by what the target can still do after them (`TARGET`: Math-Shepherd-style
hard estimation, with the target as the completer):

1. The draft's final answer is right: every step is `good`.
2. Otherwise the target answers from scratch. If it is wrong too, the question gives no
   verdict (every label `null`): neither model can solve it.
3. Otherwise the target continues, greedily, from the draft's first k steps. With
   c(k) = "that continuation reaches the gold answer", c(0) = 1 and c(n) = 0; a binary
   search finds k with c(k-1) = 1 and c(k) = 0. Step k is `bad` (it turned a prefix the
   target could finish into one it cannot), the steps before it `good`, the steps after
   it `null` (they continue an already broken answer).

Each question is one JSON line, appended and flushed when it is done: a run stopped at any
point resumes where it stopped (a line cut short by a kill is asked again).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rsdchat.core.engine import Engine
from rsdchat.core.policy import Policy
from rsdchat.core.trace import Trace
from rsdchat.core.types import Message, Role
from rsdchat.evaluation.data import Problem
from rsdchat.evaluation.grading import extract_answer, is_correct

TARGET = "math-shepherd-binary-v1"  # the target finishes from each prefix
ANSWER = "outcome-v1"  # the draft's final answer labels every step
PROCEDURES = {"target": TARGET, "answer": ANSWER}


def _steps(trace: Trace) -> list[dict[str, Any]]:
    return [
        {
            "text": step.text,
            "tokens": step.tokens,
            "finish_reason": step.finish_reason,
            "token_logprobs": step.generation.token_logprobs,
            "token_texts": step.generation.token_texts,
            "token_entropies": step.generation.token_entropies,
        }
        for step in trace.answer_steps
    ]


async def label(
    problem: Problem,
    engine: Engine,
    draft: Policy,
    target: Policy | None,
    system: str,
    *,
    seed: int = 0,
    procedure: str = TARGET,
) -> dict[str, Any]:
    """One question's record: the draft's steps and a label per step (`good`, `bad` or None).

    `procedure` is `TARGET` (needs `target`) or `ANSWER` (the target is not used)."""
    messages = [Message("system", system), Message("user", problem.question)]
    started = time.perf_counter()
    solved = await engine.solve(messages, draft, request_id=problem.id, seed=seed)
    steps = _steps(solved)
    record: dict[str, Any] = {
        "id": problem.id,
        "question": problem.question,
        "reference": problem.reference,
        "system": system,
        "procedure": procedure,
        "draft": {
            "answer": extract_answer(solved.text),
            "correct": is_correct(solved.text, problem.reference),
            "finish_reason": solved.finish_reason,
            "steps": steps,
        },
        "continuations": {},
    }
    n = len(steps)
    if record["draft"]["correct"]:
        record["labels"] = ["good"] * n
    elif procedure == ANSWER:
        record["labels"] = ["bad"] * n
    else:
        assert target is not None, "labelling by the target needs the target"
        completer: Policy = target

        async def completes(k: int) -> bool:
            prefix = "".join(step["text"] for step in steps[:k])
            trace = await engine.solve(messages, completer, request_id=f"{problem.id}@{k}", prefix=prefix)
            ok = is_correct(prefix + trace.text, problem.reference)
            record["continuations"][str(k)] = {
                "correct": ok,
                "answer": extract_answer(prefix + trace.text),
                "text": trace.text,
                "tokens": trace.ledger.cost(Role.TARGET).generated_tokens,
            }
            return ok

        if n == 0 or not await completes(0):
            record["labels"] = [None] * n
        else:
            good, bad = 0, n  # c(good) = 1, c(bad) = 0
            while bad - good > 1:
                middle = (good + bad) // 2
                if await completes(middle):
                    good = middle
                else:
                    bad = middle
            record["labels"] = ["good"] * (bad - 1) + ["bad"] + [None] * (n - bad)
    record["seconds"] = round(time.perf_counter() - started, 2)
    return record


def read_labels(path: Path) -> list[dict[str, Any]]:
    """The whole records of a labels file (a line cut short by a kill is skipped: asked again)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "id" in record and "labels" in record:
            records.append(record)
    return records


def append(path: Path, record: dict[str, Any]) -> None:
    """Add one record to the file, on disk before this returns."""
    torn = False
    if path.is_file() and path.stat().st_size > 0:
        with path.open("rb") as file:
            file.seek(-1, os.SEEK_END)
            torn = file.read(1) != b"\n"  # a line cut short by a kill: start a fresh one
    with path.open("a", encoding="utf-8") as out:
        out.write(("\n" if torn else "") + json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()
        os.fsync(out.fileno())


def todo(problems: Iterable[Problem], path: Path) -> list[Problem]:
    done = {record["id"] for record in read_labels(path)}
    return [p for p in problems if p.id not in done]


def counts(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    labels = [label for record in records for label in record["labels"]]
    return {"good": labels.count("good"), "bad": labels.count("bad"), "none": labels.count(None)}


def procedure_of(records: Iterable[dict[str, Any]]) -> str | None:
    """The one procedure that labelled `records` (None for none); ValueError for a mix."""
    found = {record.get("procedure", TARGET) for record in records}
    if len(found) > 1:
        raise ValueError(f"the labels mix procedures ({', '.join(sorted(found))})")
    return found.pop() if found else None
