"""The ASGI app of `rsdchat serve`: RSD behind OpenAI's API (Starlette; SSE by sse-starlette).

Each request is its own pipeline through the engine (no barrier between requests): at most
`max_running` answer at once, up to `max_waiting` more wait for a slot, and past that the
answer is 429 with `Retry-After`. An answer is streamed step by step, each step once it is
final (a draft step once its reward kept it); a client that goes away cancels its answer, so
the models stop writing for it. On shutdown (`drain`) new requests get 503, running ones may
finish for a while, and the rest end with an error event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sse_starlette.sse import EventSourceResponse, SendTimeoutError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from rsdchat.core.errors import ConfigError, ContextFull
from rsdchat.core.events import Event, Finished, StepDone
from rsdchat.core.policy import Mode, Policy
from rsdchat.core.protocols import RewardSource
from rsdchat.core.trace import Step, Trace
from rsdchat.core.types import Message
from rsdchat.in_force import in_force
from rsdchat.runtime import Runtime
from rsdchat.serve.metrics import Metrics
from rsdchat.serve.replies import FINISH, Replies, error_event, provenance
from rsdchat.serve.requests import MODELS, Ask, BadRequest, parse, refused_setting


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
        ends = [i for i in (whole.find(stop) for stop in self.ask.stop) if i >= 0]
        text = whole[len(self.sent) : min(ends)] if ends and min(ends) >= len(self.sent) else step.text
        if ends:
            self.finish = "stop"
            text = "" if min(ends) < len(self.sent) else text
        self.sent += text
        self.tokens += step.tokens
        return Piece(text, step) if text or not ends else None


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


_ENDED = object()  # the solve's task is done (after its Finished event, if it sent one)


def _failure(trace: Trace, draining: bool) -> tuple[str, str]:
    """Why an answer ended without finishing, said to the client, and its error code."""
    if trace.finish_reason == "cancelled":
        return ("the server is shutting down", "server_shutdown") if draining else ("cancelled", "cancelled")
    if isinstance(trace.failure, ContextFull):
        return str(trace.error), "context_length_exceeded"
    return trace.error or "the answer failed", "server_error"


class EventStream(EventSourceResponse):
    """Server-sent events; a client that stopped reading ends its stream without a traceback."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(SendTimeoutError):
            await super().__call__(scope, receive, send)


def make_app(server: Server) -> Starlette:
    """The ASGI app: /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics."""
    limits, metrics = server.limits, server.metrics

    def authorised(request: Request) -> None:
        if limits.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), limits.api_key.encode()):
            raise BadRequest("a valid API key is needed: Authorization: Bearer KEY", status=401)

    async def body_of(request: Request) -> object:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise BadRequest(f"the request body is larger than {limits.max_body_bytes} bytes", status=413)
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limits.max_body_bytes:
                raise BadRequest(f"the request body is larger than {limits.max_body_bytes} bytes", status=413)
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the request body is not JSON: {exc}") from None

    def refused(error: BadRequest, model: str = "") -> JSONResponse:
        metrics.requests[(model or "-", error.status)] += 1
        headers = {"Retry-After": "1"} if error.status in (429, 503) else None
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    def completions(chat: bool) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            model = ""
            try:
                authorised(request)
                ask = parse(await body_of(request), server.settings, chat=chat)
                model = ask.model
                slot = server.reserve()
            except BadRequest as error:
                return refused(error, model)
            try:
                answer = await server.prepare(ask)
            except BadRequest as error:
                slot.release()
                return refused(error, model)
            replies = Replies(answer.request_id, model, chat=chat)
            if not ask.stream:
                try:
                    return await _whole(server, request, answer, replies, slot, started)
                finally:
                    slot.release()
            events = _stream(server, answer, replies, slot, started)
            return EventStream(
                events, send_timeout=limits.send_timeout, ping=15, background=BackgroundTask(slot.release)
            )

        return endpoint

    async def models(request: Request) -> Response:
        try:
            authorised(request)
        except BadRequest as error:
            return refused(error)
        created = int(time.time())
        data = [{"id": name, "object": "model", "created": created, "owned_by": "rsdchat"} for name in MODELS]
        return JSONResponse({"object": "list", "data": data})

    async def health(request: Request) -> Response:
        if server.draining:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        return JSONResponse({"status": "ok", "running": metrics.running, "waiting": metrics.waiting})

    async def prometheus(request: Request) -> Response:
        try:
            authorised(request)
        except BadRequest as error:
            return refused(error)
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    async def not_found(request: Request, exc: Exception) -> Response:
        return refused(BadRequest(f"no such endpoint: {request.method} {request.url.path}", status=404))

    async def wrong_method(request: Request, exc: Exception) -> Response:
        return refused(BadRequest(f"{request.method} is not allowed on {request.url.path}", status=405))

    routes = [
        Route("/v1/chat/completions", completions(chat=True), methods=["POST"]),
        Route("/v1/completions", completions(chat=False), methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: wrong_method})


async def _stream(
    server: Server,
    answer: Answer,
    replies: Replies,
    slot: Slot,
    started: float,
) -> AsyncIterator[dict[str, str]]:
    """The SSE events of one streamed answer: chunks, the end (or an error event), `[DONE]`."""
    metrics, status = server.metrics, 499  # until its end is sent: a client that leaves, as in _whole

    def event(data: dict[str, Any]) -> dict[str, str]:
        return {"data": json.dumps(data, ensure_ascii=False)}

    try:
        yield event(replies.first())
        await slot.start()  # waiting for a running slot, the client has its first chunk (and pings)
        async for piece in server.pieces(answer):
            if isinstance(piece, Piece):
                yield event(replies.chunk(piece.text, rsd=provenance(piece.step, answer.policy)))
            else:  # a rejected draft: provenance only
                yield event(replies.chunk(None, rsd=provenance(piece, answer.policy) | {"text": piece.text}))
        trace = answer.trace
        assert trace is not None
        if answer.finish is None:
            message, code = _failure(trace, server.draining)
            status = 500
            yield event(error_event(message, code))
        else:
            status = 200
            yield event(replies.chunk(None, finish=answer.finish))
            if answer.ask.include_usage:
                yield event(replies.usage_chunk(trace, answer.tokens))
        yield {"data": "[DONE]"}
    finally:
        metrics.requests[(answer.ask.model, status)] += 1
        metrics.latency.observe(time.perf_counter() - started)
        slot.release()


async def _whole(
    server: Server, request: Request, answer: Answer, replies: Replies, slot: Slot, started: float
) -> Response:
    """The answer in one response; a client that leaves meanwhile cancels it."""
    metrics = server.metrics

    async def collect() -> None:
        await slot.start()
        async for _ in server.pieces(answer):
            pass

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    work, watch = asyncio.ensure_future(collect()), asyncio.ensure_future(gone())
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, watch):
            task.cancel()
        await asyncio.gather(work, watch, return_exceptions=True)
    trace, model = answer.trace, answer.ask.model
    if trace is None or (not work.done() or work.cancelled()):  # the client left
        metrics.requests[(model, 499)] += 1
        return Response(status_code=499)
    metrics.latency.observe(time.perf_counter() - started)
    if answer.finish is None:
        message, code = _failure(trace, server.draining)
        status = 400 if code == "context_length_exceeded" else 503 if code == "server_shutdown" else 500
        error = BadRequest(message, status=status, code=code)
        metrics.requests[(model, status)] += 1
        return JSONResponse(error.body(), status_code=status)
    metrics.requests[(model, 200)] += 1
    body = replies.whole(answer.sent, answer.finish, trace, answer.policy, answer.tokens)
    return JSONResponse(body)
