"""What `rsdchat serve` sends back: OpenAI's shapes, plus the step provenance in `rsd` fields.

Standard clients read `choices`, `usage` and ignore the rest. A client that wants to know
who wrote what reads `rsd`: on each streamed chunk, the step it carries (or a rejected
draft, which carries no content); on a whole answer, every step and the cost per role.
"""

from __future__ import annotations

import math
import time
from typing import Any

from rsdchat.core.policy import Policy
from rsdchat.core.trace import Step, Trace
from rsdchat.core.types import Role

FINISH = {"eos": "stop", "answer": "stop", "stop": "stop", "max_steps": "length", "max_tokens": "length"}
"""The trace's finish reason as OpenAI names it."""


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def provenance(step: Step, policy: Policy) -> dict[str, Any]:
    """Who wrote `step`, what it scored, what became of it, and the δ and reward in force."""
    decision = step.decision
    return {
        "step": step.index,
        "author": step.author.value,
        "accepted": step.accepted,
        "reward": _finite(step.reward),
        "omega": _finite(decision.omega) if decision is not None else None,
        "reward_source": step.reward_source,
        "delta": policy.weighting.threshold,
        "detail": step.detail or None,
    }


def usage(trace: Trace, answer_tokens: int) -> dict[str, Any]:
    """OpenAI's usage (what the models read; the answer's tokens) and the measured cost per role."""
    ledger = trace.ledger
    read = sum(ledger.usage[role].prefill_tokens for role in ledger.usage if role is not Role.REWARD)
    flops = ledger.flops
    per_role = {
        role.value: {
            "prefill_tokens": cost.prefill_tokens,
            "generated_tokens": cost.generated_tokens,
            "seconds": round(cost.seconds, 4),
            "flops": ledger.flops_by_role.get(role) if role not in ledger.unsized else None,
        }
        for role, cost in ledger.usage.items()
    }
    return {
        "prompt_tokens": read,
        "completion_tokens": answer_tokens,
        "total_tokens": read + answer_tokens,
        "rsd": {"roles": per_role, "flops": flops},
    }


class Replies:
    """The id, creation time and model of one answer, and its chunks and whole reply."""

    def __init__(self, request_id: str, model: str, *, chat: bool) -> None:
        self.id = ("chatcmpl-" if chat else "cmpl-") + request_id
        self.created = int(time.time())
        self.model = model
        self.chat = chat

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def chunk(
        self, content: str | None, *, finish: str | None = None, rsd: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One streamed chunk: a piece of the answer (None: only provenance, or the end)."""
        if self.chat:
            delta: dict[str, Any] = {} if content is None else {"content": content}
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            data = self._head("chat.completion.chunk") | {"choices": [choice]}
        else:
            choice = {"index": 0, "text": content or "", "logprobs": None, "finish_reason": finish}
            data = self._head("text_completion") | {"choices": [choice]}
        return data | ({"rsd": rsd} if rsd is not None else {})

    def first(self) -> dict[str, Any]:
        """The stream's first chunk: the assistant's role (chat), nothing yet."""
        data = self.chunk("")
        if self.chat:
            data["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        return data

    def usage_chunk(self, trace: Trace, answer_tokens: int) -> dict[str, Any]:
        """The last chunk when the client asked for `stream_options.include_usage`."""
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return self._head(kind) | {"choices": [], "usage": usage(trace, answer_tokens)}

    def whole(
        self, text: str, finish: str, trace: Trace, policy: Policy, answer_tokens: int
    ) -> dict[str, Any]:
        """The answer not streamed: the text, why it ended, usage, and every step's provenance."""
        if self.chat:
            message = {"role": "assistant", "content": text}
            choice: dict[str, Any] = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish,
            }
            data = self._head("chat.completion") | {"choices": [choice]}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            data = self._head("text_completion") | {"choices": [choice]}
        steps = [provenance(step, policy) | {"text": step.text} for step in trace.steps]
        acceptance = trace.acceptance
        rsd = {
            "steps": steps,
            "accepted_drafts": acceptance.accepted,
            "judged_drafts": acceptance.judged,
            "reward": policy.reward.name if policy.reward is not None else None,
            "weighting": policy.weighting.to_dict(),
            "mode": policy.mode.value,
            "finish_reason": trace.finish_reason,
        }
        return data | {"usage": usage(trace, answer_tokens), "rsd": rsd}


def error_event(message: str, code: str = "server_error") -> dict[str, Any]:
    """What a stream carries when the answer fails midway (then `[DONE]`)."""
    return {"error": {"message": message, "type": "server_error", "param": None, "code": code}}
