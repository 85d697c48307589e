"""Strict JSON out: NaN and ±inf (which `JSON.parse` and jq refuse) are written as null."""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every float that is not a finite number replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def dumps(value: Any) -> str:
    """One line of strict JSON, valid UTF-8 (text that is not, a lone surrogate say, is \\u-escaped)."""
    text = json.dumps(finite(value), ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(finite(value), ensure_ascii=True, allow_nan=False)
    return text
