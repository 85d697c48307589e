"""The ASGI app of `rsdchat serve`: RSD behind OpenAI's API (Starlette; SSE by sse-starlette).

The HTTP side: auth, body limits, errors in OpenAI's shape, 429 with `Retry-After` past the line
(`answering.Server`), an answer streamed step by step or sent whole, a client that goes away
cancelling its answer, and an error event (then `[DONE]`) for an answer that fails midway or is
ended by a shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sse_starlette.sse import EventSourceResponse, SendTimeoutError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from rsdchat.core.errors import ContextFull
from rsdchat.core.trace import Trace
from rsdchat.serve.answering import Answer, Piece, Server, Slot
from rsdchat.serve.replies import Replies, error_event, provenance
from rsdchat.serve.requests import MODELS, BadRequest, parse


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
