"""The answering side of `rsdchat serve`: admission, the policy in force, and steps as they become final.

Each request is its own pipeline through the engine (no barrier between requests): at most
`max_running` answer at once, up to `max_waiting` more wait for a slot, and past that the
request is refused (429). An answer's steps come out as they become final (a draft step once
its reward kept it); cancelling the consumer cancels the solve, so the models stop writing for
it. `drain` refuses new requests and ends the running ones after a grace period.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from rsdchat.core.errors import ConfigError
from rsdchat.core.events import Event, Finished, StepDone
from rsdchat.core.policy import Mode, Policy
from rsdchat.core.protocols import RewardSource
from rsdchat.core.trace import Step, Trace
from rsdchat.core.types import Message
from rsdchat.in_force import in_force
from rsdchat.runtime import Runtime
from rsdchat.serve.metrics import Metrics
from rsdchat.serve.replies import FINISH
from rsdchat.serve.requests import Ask, BadRequest, refused_setting

_ENDED = object()  # the solve's task is done (after its Finished event, if it sent one)


@dataclass(frozen=True)
class Limits:
    """What the operator allows: slots, queue, body size, a slow reader's patience, the key."""

    max_running: int = 8
    max_waiting: int = 64
    max_body_bytes: int = 1 << 20
    send_timeout: float = 60.0  # seconds a stream may wait for a client that does not read
    api_key: str | None = None


@dataclass(frozen=True)
class Piece:
    """A finished step of the answer as the client gets it (text cut at a stop string)."""

    text: str
    step: Step


@dataclass
class Answer:
    """One request's answer as it is written: its pieces, then the trace and why it ended."""

    ask: Ask
    policy: Policy
    messages: list[Message]
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    trace: Trace | None = None
    finish: str | None = None  # "stop" | "length" (None: it failed or was cut off)
    started: float = field(default_factory=time.perf_counter)
    stepped: bool = False  # its first step is done
    sent: str = ""  # the answer's text so far
    tokens: int = 0  # the answer's tokens so far

    def cut(self, step: Step) -> Piece | None:
        """`step` as the client gets it; the answer stops at the first stop string (finish: stop)."""
        whole = self.sent + step.text
        end = min((i for i in (whole.find(stop) for stop in self.ask.stop) if i >= 0), default=None)
        text = whole[len(self.sent) :] if end is None else whole[len(self.sent) : max(end, len(self.sent))]
        if end is not None:
            self.finish = "stop"
        self.sent += text
        self.tokens += step.tokens
        return Piece(text, step) if text or end is None else None


@dataclass
class Slot:
    """A request's place: waiting for one of the running slots, running, then released (once)."""

    server: Server
    state: str = "waiting"  # waiting | running | released

    async def start(self) -> None:
        """Wait for a running slot (cancelling the wait leaves the slot waiting, to be released)."""
        await self.server._slots.acquire()
        metrics = self.server.metrics
        metrics.waiting, metrics.running = metrics.waiting - 1, metrics.running + 1
        self.state = "running"

    def release(self) -> None:
        metrics = self.server.metrics
        if self.state == "waiting":
            metrics.waiting -= 1
        elif self.state == "running":
            metrics.running -= 1
            self.server._slots.release()
        self.state = "released"


class Server:
    """The models, the settings, the limits and the counters behind the endpoints."""

    def __init__(self, runtime: Runtime, limits: Limits) -> None:
        self.runtime, self.settings, self.limits = runtime, runtime.settings, limits
        self.metrics = Metrics()
        self._slots = asyncio.Semaphore(limits.max_running)
        self._rewards: dict[str, RewardSource] = {}
        if runtime.reward is not None:
            self._rewards[self.settings.reward] = runtime.reward
        self._building = asyncio.Lock()
        self._answers: set[asyncio.Task[Trace]] = set()
        self.draining = False

    # -- admission ----------------------------------------------------------------------

    def reserve(self) -> Slot:
        """A place in line; BadRequest 429 when the line is full, 503 while shutting down.

        The request waits for a running slot with `Slot.start`: a streamed one after its response
        has begun (so a waiting client hears from the server at once), others before answering.
        """
        metrics, limits = self.metrics, self.limits
        if self.draining:
            raise BadRequest("the server is shutting down", status=503)
        if metrics.running + metrics.waiting >= limits.max_running + limits.max_waiting:
            raise BadRequest(
                f"too many requests: {metrics.running} running, {metrics.waiting} waiting; retry later",
                status=429,
                code="rate_limit_exceeded",
            )
        metrics.waiting += 1
        return Slot(self)

    async def reward(self, spec: str) -> RewardSource:
        """The reward source `spec` names, built once for the server (off the event loop)."""
        async with self._building:
            if spec not in self._rewards:
                try:
                    self._rewards[spec] = await self.runtime.make_reward(spec)
                except ConfigError as exc:
                    raise BadRequest(f"rsd.reward: {exc}", param="rsd.reward") from None
            return self._rewards[spec]

    async def prepare(self, ask: Ask) -> Answer:
        """The policy in force for `ask` (the one `in_force`) and the conversation the models get."""
        settings = ask.settings
        reward = await self.reward(settings.reward) if settings.mode is Mode.RSD else None
        try:
            now = in_force(settings, reward)
            self.runtime.engine.check(now.policy)
        except ConfigError as exc:
            raise refused_setting(exc) from None
        system = ask.system if ask.system is not None else now.system
        messages = ([Message("system", system)] if system.strip() else []) + ask.messages
        return Answer(ask, now.policy, messages)

    # -- answering ----------------------------------------------------------------------

    async def pieces(self, answer: Answer) -> AsyncIterator[Piece | Step]:
        """The answer's steps as they become final: `Piece`s of text, and rejected drafts (`Step`s).

        When it ends, `answer.trace` holds what happened. Cancelling the consumer cancels the solve.
        """
        events: asyncio.Queue[Event | object] = asyncio.Queue()
        solve = self.runtime.engine.solve(
            answer.messages,
            answer.policy,
            request_id=answer.request_id,
            seed=answer.ask.settings.seed,
            emit=events.put_nowait,
        )
        task = asyncio.ensure_future(solve)
        task.add_done_callback(lambda _: events.put_nowait(_ENDED))  # even if cancelled before it ran
        self._answers.add(task)
        try:
            while True:
                event = await events.get()
                if event is _ENDED or isinstance(event, Finished):
                    answer.trace = event.trace if isinstance(event, Finished) else None
                    break
                if not isinstance(event, StepDone) or answer.finish == "stop":
                    continue
                if not answer.stepped:
                    answer.stepped = True
                    self.metrics.first_step.observe(time.perf_counter() - answer.started)
                if not event.step.accepted:
                    yield event.step
                    continue
                piece = answer.cut(event.step)
                if piece is not None:
                    yield piece
                if answer.finish == "stop":  # a stop string: the rest is not wanted
                    task.cancel()
            if answer.trace is None:  # cancelled before its first step
                answer.trace = Trace(answer.request_id, "", finish_reason="cancelled")
            if answer.finish is None:
                answer.finish = FINISH.get(answer.trace.finish_reason)
        finally:
            self._answers.discard(task)
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            while answer.trace is None and not events.empty():  # cut off: what it cost until then
                event = events.get_nowait()
                answer.trace = event.trace if isinstance(event, Finished) else None
            if answer.trace is not None:
                self.metrics.finished(answer.trace)  # every answer's steps and tokens, cut off or not

    async def drain(self, grace: float) -> None:
        """Refuse new requests; let running ones finish for `grace` seconds, then end them."""
        self.draining = True
        deadline = time.monotonic() + grace
        while self._answers and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for task in list(self._answers):
            task.cancel()
