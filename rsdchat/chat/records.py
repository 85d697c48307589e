"""What each field of a transcript record must be, so that everything that reads it later can.

`record_problem(record)` names the first field missing or not what it must be ('' if none): a
hand-edited or damaged chat file is refused with one line naming its file, line and field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rsdchat.core.decision import Decision
from rsdchat.core.errors import ConfigError

KINDS = ("session", "user", "step", "change", "answer")

Check = Callable[[Any], str]  # '' when the value is fine, else what it is not


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any) -> str:
    return "" if isinstance(value, str) else "is not text"


def _whole(value: Any) -> str:
    return "" if isinstance(value, int) and not isinstance(value, bool) else "is not a whole number"


def _place(value: Any) -> str:
    return "" if not _whole(value) and value >= 0 else "is not a whole number ≥ 0"


def _count(value: Any) -> str:
    return "" if _is_number(value) and value >= 0 else "is not a number ≥ 0"


def _number(value: Any) -> str:
    return "" if _is_number(value) else "is not a number"


def _flag(value: Any) -> str:
    return "" if isinstance(value, bool) else "is not true or false"


def _object(value: Any) -> str:
    return "" if isinstance(value, dict) else "is not an object"


def _names(value: Any) -> str:
    ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    return "" if ok else "is not an object of names"


def _bounds(value: Any) -> str:
    ok = isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)
    return "" if ok else "is not a pair of numbers"


def _cost(value: Any) -> str:
    """A cost per role (Ledger.to_dict): each role's tokens and seconds are numbers, FLOPs too or null
    (a model of unknown size)."""
    if not isinstance(value, dict):
        return "is not an object"
    for role, usage in value.items():
        if role == "total_flops":
            if usage is not None and not _is_number(usage):
                return "has a total_flops that is not a number"
            continue
        if not isinstance(usage, dict):
            return f"has a {role} that is not an object"
        for key, number in usage.items():
            if not _is_number(number) and not (key == "flops" and number is None):
                return f"has a {role}.{key} that is not a number"
    return ""


def _decision(value: Any) -> str:
    """A judged step's decision; one that cannot be read is shown without it, unless it would crash."""
    if not isinstance(value, dict):
        return "is not an object"
    if not isinstance(value.get("weighting", {}), dict):
        return "has a weighting that is not an object"
    try:
        Decision.from_dict(value)
    except (ConfigError, KeyError, TypeError, ValueError):
        pass  # decision_of: shown without the decision
    except Exception as exc:  # anything else would stop the chat from drawing it
        return f"cannot be read ({type(exc).__name__})"
    return ""


_REQUIRED: dict[str, dict[str, Check]] = {
    "user": {"turn": _whole, "content": _text},
    "step": {"turn": _whole, "index": _place, "author": _text, "text": _text},
    "change": {"text": _text},
    "answer": {"turn": _whole, "content": _text},
}
_OPTIONAL: dict[str, dict[str, Check]] = {  # missing or null is fine
    "session": {"models": _names, "knobs": _object, "settings": _object, "started": _text},
    "user": {"retry_of": _whole, "system": _text, "in_force": _object},
    "step": {
        "accepted": _flag,
        "tokens": _count,
        "score": _number,
        "seconds": _number,
        "reward_bounds": _bounds,
        "decision": _decision,
        "cost": _cost,
        "mode": _text,
        "reward_source": _text,
        "finish_reason": _text,
    },
    "change": {"turn": _whole, "from_step": _whole, "knobs": _object, "in_force": _object},
    "answer": {
        "finish_reason": _text,
        "error": _text,
        "final_answer": _text,
        "steps": _count,
        "drafts": _count,
        "accepted_drafts": _count,
        "seconds": _number,
        "cost": _cost,
        "partial": _text,
        "partial_index": _place,
        "partial_author": _text,
        "kept": _flag,
        "retry_of": _whole,
    },
}


def record_problem(record: object) -> str:
    """What is wrong with one record ('' if nothing): the first field missing or not what it must be."""
    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
        return "not a transcript record (needs a JSON object with a type)"
    kind = record["type"]
    if kind not in KINDS:
        return f"unknown record type {kind!r}"
    for key, check in _REQUIRED.get(kind, {}).items():
        if key not in record or record[key] is None:
            return f"{kind} record without a valid {key!r}"
        wrong = check(record[key])
        if wrong:
            return f"{kind} record: field {key!r} {wrong}"
    for key, check in _OPTIONAL.get(kind, {}).items():
        wrong = check(record[key]) if record.get(key) is not None else ""
        if wrong:
            return f"field {key!r} {wrong}"
    if kind == "step" and record["author"] not in ("draft", "target"):
        return f"step author must be draft or target, got {record['author']!r}"
    return ""
