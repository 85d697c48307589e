"""Free signals about one draft step: what the draft itself knew while writing it, and checks of its text.

A mean token probability over a ~50-token step is dominated by easy filler tokens: one
wrong number barely moves it. These features look where mistakes are — the tokens of
numbers and operators, the least likely tokens, the model's uncertainty (entropy) — and
check the text: the arithmetic it writes, and whether each number it uses comes from the
question, an earlier step, or a computation in the step itself (grounding).

Everything here is computed from what a generation already carries (the sampled tokens'
log-probabilities, pieces and entropies): it costs no model call.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from rsdchat.core.types import Context, Generation
from rsdchat.rewards.arithmetic import check_arithmetic

_NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])-?\d+(?:\.\d+)?")
_MATHY = re.compile(r"[\d+\-*/=×÷^%]")
SMALL = 12.0  # numbers up to this are too common ("step 2", "half") to count as ungrounded

FEATURES: Mapping[str, str] = MappingProxyType(
    {
        "mean_logprob": "mean log-probability of the step's tokens",
        "min_logprob": "log-probability of its least likely token",
        "q10_logprob": "10th percentile of its tokens' log-probabilities",
        "math_min_logprob": "least likely token among those of numbers and operators",
        "math_mean_logprob": "mean log-probability of the number and operator tokens",
        "mean_entropy": "mean entropy of the next-token distributions (nats)",
        "max_entropy": "largest entropy",
        "math_max_entropy": "largest entropy at a number or operator token",
        "wrong_equations": "equations in the step whose claimed value is wrong",
        "checked_equations": "equations checked",
        "ungrounded": "numbers above 12 not in the question, earlier steps, or computed here",
        "numbers": "numbers in the step",
        "log_tokens": "log(1 + tokens in the step)",
        "position": "log(1 + steps before this one)",
        "cut": "1 if the step hit its token cap",
    }
)


def numbers_in(text: str) -> set[float]:
    found = set()
    for match in _NUMBER.finditer(text):
        try:
            found.add(round(float(match.group().replace(",", "")), 6))
        except ValueError:
            continue
    return found


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def step_features(context: Context, step: Generation) -> dict[str, float]:
    """The features of `step` after `context` (a step without token data gets neutral values)."""
    logprobs = list(step.token_logprobs or ())
    pieces = list(step.token_texts or ())
    entropies = list(step.token_entropies or ())
    if len(pieces) != len(logprobs):
        pieces = [""] * len(logprobs)
    if len(entropies) != len(logprobs):
        entropies = [0.0] * len(logprobs)
    mathy = [i for i, piece in enumerate(pieces) if _MATHY.search(piece)]
    report = check_arithmetic(step.text)
    known = numbers_in(context.question) | numbers_in(context.response)
    known |= {round(e.rhs, 6) for e in report.equations}  # computed in the step (checked apart)
    used = numbers_in(step.text)
    previous = context.response.count("\n\n")
    return {
        "mean_logprob": math.fsum(logprobs) / len(logprobs) if logprobs else 0.0,
        "min_logprob": min(logprobs, default=0.0),
        "q10_logprob": _quantile(logprobs, 0.1) if logprobs else 0.0,
        "math_min_logprob": min((logprobs[i] for i in mathy), default=0.0),
        "math_mean_logprob": math.fsum(logprobs[i] for i in mathy) / len(mathy) if mathy else 0.0,
        "mean_entropy": math.fsum(entropies) / len(entropies) if entropies else 0.0,
        "max_entropy": max(entropies, default=0.0),
        "math_max_entropy": max((entropies[i] for i in mathy), default=0.0),
        "wrong_equations": float(report.wrong),
        "checked_equations": float(report.checked),
        "ungrounded": float(sum(1 for n in used if abs(n) > SMALL and n not in known)),
        "numbers": float(len(used)),
        "log_tokens": math.log1p(len(logprobs)),
        "position": math.log1p(previous),
        "cut": 1.0 if step.finish_reason == "length" else 0.0,
    }
