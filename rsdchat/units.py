"""Numbers for people: SI prefixes (one home for 1.2 TFLOP, 3.4k tokens, …), and 'unknown' for none."""

from __future__ import annotations

_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


UNKNOWN = "unknown"


def si(value: float | None, unit: str = "", *, digits: int = 3) -> str:
    """'1.23 TFLOP', '4.5k' (no unit: no space), '12' (below a thousand as it is); None: 'unknown'."""
    if value is None:
        return UNKNOWN
    for size, prefix in _PREFIXES:
        if abs(value) >= size:
            number = f"{value / size:.{digits}g}"
            return f"{number} {prefix}{unit}" if unit else f"{number}{prefix}"
    number = f"{value:.{digits}g}"
    return f"{number} {unit}" if unit else number
