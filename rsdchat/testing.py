"""Scripted stand-ins for models and reward sources, for testing engine logic and front ends.

They follow the real protocols exactly, so a test exercises the same code paths as a
real run; they are for logic, not for claiming a backend works.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Literal

from rsdchat.core.protocols import Feature, Logprobs, Score, TokenSink
from rsdchat.core.types import Context, Generation, ModelInfo, StepRequest, Usage

StepScript = Callable[[Context, StepRequest], str]


def installed(*distributions: str) -> bool:
    """Whether every named distribution is installed (for skipping tests that need real models)."""
    try:
        for name in distributions:
            metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def free_port() -> int:
    """A loopback port nothing listens on now (bound to port 0, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def handmade_labels(path: Path, questions: int) -> None:
    """A `train-prm` labels file without a labelling run: GSM8K-train ids, two steps each, the
    second one wrong (labelled bad) in every other question."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(questions):
            a, b = i + 2, i + 5
            answer = a + b + (i % 2) * 7
            steps = [f"First, {a} + {b} = {a + b}.\n\n", f"So the answer is \\boxed{{{answer}}}."]
            record = {
                "id": f"gsm8k-train-{i}",
                "question": f"What is {a} + {b}?",
                "labels": ["good", "good" if i % 2 == 0 else "bad"],
                "draft": {"steps": [{"text": s} for s in steps]},
            }
            out.write(json.dumps(record) + "\n")


def steps_so_far(context: Context, delimiter: str = "\n\n") -> int:
    """How many complete steps the reply holds (each ends with the delimiter)."""
    return context.response.count(delimiter)


class ScriptedModel:
    """A model whose next step is given by a script.

    `script` is either a list of steps (the i-th call after i finished steps returns
    the i-th item; past the end it ends the reply) or a function of the context.
    A step that does not end with a stop string finishes with "eos". It honours every
    request feature by default (a proposal changes nothing: the script writes its own text, as
    a model that checks one does); give `features` to stand in for a backend that honours fewer.
    """

    def __init__(
        self,
        script: Sequence[str] | StepScript,
        *,
        name: str = "scripted",
        n_params: int = 1_000_000,
        logprob: float = -0.1,
        delay: float = 0.0,
        features: frozenset[Feature] = frozenset(Feature),
    ) -> None:
        self._script = script
        self.features = features
        self.info = ModelInfo(name=name, n_params=n_params, backend="scripted")
        self.logprob = logprob  # per-token log-probability reported for everything
        self.delay = delay  # seconds per token, to let tests cancel mid-step
        self.calls: list[Context] = []

    def next_text(self, context: Context, request: StepRequest) -> str:
        if callable(self._script):
            return self._script(context, request)
        index = steps_so_far(context, request.stop[0])
        return self._script[index] if index < len(self._script) else ""

    async def generate(
        self, context: Context, request: StepRequest, on_token: TokenSink | None = None
    ) -> Generation:
        self.calls.append(context)
        text = self.next_text(context, request)
        pieces = text.split(" ")
        pieces = [p + " " for p in pieces[:-1]] + pieces[-1:]
        pieces = pieces[: request.max_tokens]
        for piece in pieces:
            if self.delay:
                await asyncio.sleep(self.delay)
            if on_token is not None and piece:
                on_token(piece)
        written = "".join(pieces)
        finish: Literal["step", "eos", "length"] = "eos"
        if any(written.endswith(stop) for stop in request.stop):
            finish = "step"
        elif len(pieces) < len(text.split(" ")):
            finish = "length"
        usage = Usage(prefill_tokens=1, generated_tokens=len(pieces))
        return Generation(written, finish, usage, tuple(self.logprob for _ in pieces))

    async def logprobs(self, context: Context, continuation: str) -> Logprobs:
        n = max(1, len(continuation.split(" ")))
        return Logprobs(tuple(self.logprob for _ in range(n)), Usage(prefill_tokens=n))


@dataclass
class ScriptedReward:
    """A reward source that returns `reward(context, step)`."""

    reward: Callable[[Context, Generation], float]
    name: str = "scripted"
    kind: Literal["process", "outcome"] = "process"
    default_delta: float = 0.7
    bounds: tuple[float, float] | None = (0.0, 1.0)
    n_params: int = 0
    calls: list[str] = field(default_factory=list)
    closed: bool = False

    async def score(self, context: Context, step: Generation) -> Score:
        self.calls.append(step.text)
        read = 1 if self.n_params else 0  # a scripted check with no model reads nothing (it is free)
        return Score(self.reward(context, step), Usage(prefill_tokens=read))

    async def aclose(self) -> None:
        self.closed = True
