"""HTTP to one role's servers: least requests in flight, bounded retries, one-line errors.

A `Pool` holds a role's replicas. Each request goes to the replica with the fewest
requests in flight; connection failures, timeouts and 5xx answers are retried with
exponential backoff (on another replica when there is one), then end in a
BackendError that names the role and the URL. Connection failures are retried only
within the connect timeout, so a server that is down is reported within it.

A replica that cannot be reached while others can is set aside: said once, left out of
the requests, and tried again every DOWN_RETRY seconds (asked what it serves, first),
back in use once it answers. Only a role whose every replica is down fails.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from rsdchat.plugin_api import PROGRESS, BackendError, ConfigError, RsdchatError, redact
from rsdchat_openai.config import RoleEndpoint

BACKOFF = 0.25  # seconds before the first retry; doubles each time
PROBE_TIMEOUT = 15.0  # seconds a server may take to say what it serves
DOWN_RETRY = 30.0  # seconds before a replica that could not be reached is tried again
Admit = Callable[[Any, str], None]  # checks a /v1/models answer of a replica (raises if it will not do)


class NotFound(BackendError):
    """The server has no such route (HTTP 404): callers say which API was missing."""


class _Retryable(Exception):
    """A failure worth another attempt: 5xx or 429 (with the wait the server asked for, if any)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


MAX_RETRY_AFTER = 30.0  # seconds: the longest Retry-After honoured


def retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (a number of seconds, or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class Replica:
    """One server of a role, with the load the client has put on it."""

    url: str
    in_flight: int = 0
    requests: int = 0
    busy_seconds: float = 0.0  # wall time with at least one request in flight
    _busy_since: float = 0.0
    down: str | None = None  # why it is set aside (None: in use)
    retry_at: float = 0.0  # when a replica set aside is tried again (time.monotonic)

    def due(self, now: float) -> bool:
        return self.down is None or now >= self.retry_at


def first_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _visible_text(html: str) -> str:
    title = re.search(r"<title[^>]*>(.*?)</title>", html, re.IGNORECASE | re.DOTALL)
    if title and title.group(1).strip():
        return title.group(1)
    return re.sub(r"<[^>]+>", " ", re.sub(r"(?is)<(script|style).*?</\1>", " ", html))


def server_message(response: httpx.Response) -> str:
    """The server's own explanation: vLLM's error.message, FastAPI's detail, an HTML page's title."""
    try:
        body = response.json()
    except ValueError:
        text = response.text
        if "<html" in text[:500].lower() or "<!doctype" in text[:100].lower():
            text = _visible_text(text)
        return first_line(text) or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return first_line(str(error["message"]))
        for key in ("detail", "message", "error"):
            if body.get(key):
                return first_line(str(body[key]))
    return first_line(json.dumps(body))


def _reason(exc: BaseException, read_timeout: float) -> tuple[str, bool]:
    """A short reason and whether it is a connection failure (retried within the connect timeout)."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "no connection within the connect timeout", True
    if isinstance(exc, httpx.ConnectError):
        detail = str(exc).lower()
        if "refused" in detail:
            return "cannot connect (connection refused: is the server running?)", True
        return f"cannot connect ({first_line(str(exc), 120) or type(exc).__name__})", True
    if isinstance(exc, httpx.TimeoutException):
        return f"silent for {read_timeout:g} s (http_read_timeout)", False
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return "connection lost (did the server stop?)", False
    return first_line(str(exc)) or type(exc).__name__, False


class _Attempts:
    """Retry bookkeeping for one request: which replicas failed, when to give up."""

    def __init__(self, pool: Pool, only: Replica | None = None) -> None:
        self.pool = pool
        self.only = only  # every attempt goes to this replica
        self.started = time.monotonic()
        self.count = 0
        self.failed: set[str] = set()

    def after(self, replica: Replica, exc: BaseException) -> float:
        """Seconds to wait before the next attempt, or raise the final one-line error."""
        pool = self.pool
        self.count += 1
        self.failed.add(replica.url)
        reason, connecting = _reason(exc, pool.read_timeout)
        if connecting:
            pool.set_aside(replica, reason)
        untried = self.only is None and any(r.url not in self.failed for r in pool.replicas)
        delay = 0.0 if untried else BACKOFF * 2 ** (self.count - 1) * random.uniform(0.75, 1.25)  # jitter
        asked = exc.retry_after if isinstance(exc, _Retryable) else None
        if asked is not None and not untried:
            delay = min(MAX_RETRY_AFTER, asked) * random.uniform(1.0, 1.1)
        elapsed = time.monotonic() - self.started
        silent = isinstance(exc, httpx.ReadTimeout)  # a server silent that long is not retried
        if (
            silent
            or self.count > pool.retries
            or (connecting and not untried and elapsed + delay > pool.connect_timeout)
        ):
            tries = f" after {self.count} attempts" if self.count > 1 else ""
            raise BackendError(pool.redact(f"{pool.role} server {replica.url}: {reason}{tries}")) from None
        return delay


class Pool:
    """A role's replicas behind one client. Create it anywhere; use it from one event loop."""

    def __init__(self, endpoint: RoleEndpoint) -> None:
        self.role = endpoint.role.value
        self.replicas = [Replica(url) for url in endpoint.urls]
        self.connect_timeout = endpoint.connect_timeout
        self.read_timeout = endpoint.read_timeout
        self.retries = endpoint.retries
        self.api_key_env = endpoint.api_key_env
        key = endpoint.api_key()
        self._key = key
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._timeout = httpx.Timeout(self.read_timeout, connect=self.connect_timeout, pool=None)
        self._quick = httpx.Timeout(
            min(self.read_timeout, PROBE_TIMEOUT), connect=self.connect_timeout, pool=None
        )
        self._client: httpx.AsyncClient | None = None
        self._turn = 0  # round robin among equally loaded replicas
        self.say: Callable[[str], None] = PROGRESS.info
        self.admit: Admit | None = None  # checks a replica set aside before it is used again

    def __repr__(self) -> str:  # never shows the key
        return f"Pool({self.role}, {[r.url for r in self.replicas]})"

    def redact(self, text: str) -> str:
        """`text` without the API key (a server may echo the Authorization header in an error)."""
        return redact(text, self._key)

    # -- requests -------------------------------------------------------------------

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST JSON to the least loaded replica; return the decoded JSON answer."""
        return await self._request("POST", path, body)

    async def get(self, path: str, *, url: str | None = None, quick: bool = False) -> Any:
        """GET JSON from the least loaded replica, or from `url` (one of the replicas).

        `quick`: a health check, which waits for an answer PROBE_TIMEOUT at most.
        """
        return await self._request("GET", path, None, url, self._quick if quick else None)

    async def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        url: str | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> Any:
        attempts = _Attempts(self, self._replica(url) if url else None)
        while True:
            replica = attempts.only or await self._choose(attempts.failed)
            try:
                with self._busy(replica):
                    response = await self._http().request(
                        method,
                        replica.url + path,
                        json=body,
                        headers=self._headers,
                        timeout=timeout or self._timeout,
                    )
                    self._check(response, replica, path)
                    answer = self._json(response, replica, path)
            except (httpx.HTTPError, _Retryable) as exc:
                await asyncio.sleep(attempts.after(replica, exc))
            else:
                self._back(replica)
                return answer

    def get_sync(self, path: str, *, url: str) -> Any:
        """GET JSON from one replica without an event loop (checks at start-up: a short wait)."""
        replica = self._replica(url)
        attempts = _Attempts(self, replica)
        with httpx.Client(timeout=self._quick, headers=self._headers) as client:
            while True:
                try:
                    response = client.get(replica.url + path)
                    self._check(response, replica, path)
                    answer = self._json(response, replica, path)
                except (httpx.HTTPError, _Retryable) as exc:
                    time.sleep(attempts.after(replica, exc))
                else:
                    self._back(replica)
                    return answer

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """POST and yield the server-sent events (JSON objects) until `[DONE]`.

        Failures before the first event are retried; after it, the tokens already
        handed on cannot be taken back, so they end the call with a BackendError.
        Closing the iterator early closes the connection (the server stops).
        """
        attempts = _Attempts(self)
        while True:
            replica = await self._choose(attempts.failed)
            started = False
            try:
                with self._busy(replica):
                    request = self._http().build_request(
                        "POST", replica.url + path, json=body, headers=self._headers
                    )
                    response = await self._http().send(request, stream=True)
                    try:
                        if response.status_code >= 400:
                            await response.aread()
                        self._check(response, replica, path)
                        async for event in _events(response, self, replica):
                            if not started:
                                self._back(replica)
                            started = True
                            yield event
                    finally:
                        await response.aclose()
                return
            except (httpx.HTTPError, _Retryable) as exc:
                if started:
                    reason, _ = _reason(exc, self.read_timeout)
                    raise BackendError(f"{self.role} server {replica.url}: {reason} mid-answer") from None
                await asyncio.sleep(attempts.after(replica, exc))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- load sharing -----------------------------------------------------------------

    def _pick(self, avoid: set[str]) -> Replica:
        """The replica with the fewest requests in flight: not one set aside (until it is due for
        another try) nor one that just failed, where there is another."""
        now = time.monotonic()
        untried = [r for r in self.replicas if r.url not in avoid]
        candidates = [r for r in untried if r.due(now)] or untried or self.replicas
        low = min(r.in_flight for r in candidates)
        tied = [r for r in candidates if r.in_flight == low]
        self._turn += 1
        return tied[self._turn % len(tied)]

    async def _choose(self, failed: set[str]) -> Replica:
        """`_pick`, where a replica set aside and due for another try is asked what it serves first:
        back in use if it will do, else set aside again and another one picked."""
        skip = set(failed)
        while True:
            replica = self._pick(skip)
            if replica.down is None or replica.url in skip or len(self.replicas) == 1:
                return replica
            if await self._revive(replica):
                return replica
            skip.add(replica.url)

    async def _revive(self, replica: Replica) -> bool:
        try:
            response = await self._http().get(
                replica.url + "/v1/models", headers=self._headers, timeout=self._quick
            )
            self._check(response, replica, "/v1/models")
            if self.admit is not None:
                self.admit(self._json(response, replica, "/v1/models"), replica.url)
        except (httpx.HTTPError, _Retryable) as exc:
            self.set_aside(replica, _reason(exc, self.read_timeout)[0])
            return False
        except RsdchatError as exc:  # it answers, but not as the others do (another model, say)
            self.set_aside(replica, str(exc), said=True)
            return False
        self._back(replica)
        return True

    def set_aside(self, replica: Replica, reason: str, *, said: bool = False) -> None:
        """Leave `replica` out of the requests for DOWN_RETRY seconds; say so the first time (where
        another replica can serve meanwhile)."""
        if len(self.replicas) == 1:
            return  # nothing to turn to: each request reports the failure itself
        if replica.down is None or (said and reason != replica.down):
            line = reason if said else f"{self.role} server {replica.url}: {reason}"
            self.say(self.redact(f"{line}; going on without it, and trying it again every {DOWN_RETRY:g} s"))
        replica.down, replica.retry_at = reason, time.monotonic() + DOWN_RETRY

    def _back(self, replica: Replica) -> None:
        if replica.down is not None:
            replica.down = None
            self.say(f"{self.role} server {replica.url} answers again: back in use")

    def _replica(self, url: str) -> Replica:
        return next(r for r in self.replicas if r.url == url)

    @contextmanager
    def _busy(self, replica: Replica) -> Iterator[None]:
        if replica.in_flight == 0:
            replica._busy_since = time.perf_counter()
        replica.in_flight += 1
        replica.requests += 1
        try:
            yield
        finally:
            replica.in_flight -= 1
            if replica.in_flight == 0:
                replica.busy_seconds += time.perf_counter() - replica._busy_since

    def busy_seconds(self) -> dict[str, float]:
        """Per replica: wall time with at least one request of this pool in flight."""
        now = time.perf_counter()
        return {r.url: r.busy_seconds + (now - r._busy_since if r.in_flight else 0.0) for r in self.replicas}

    # -- plumbing ---------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
            self._client = httpx.AsyncClient(timeout=self._timeout, limits=limits)
        return self._client

    def _check(self, response: httpx.Response, replica: Replica, path: str) -> None:
        status = response.status_code
        if status < 400:
            return
        where = f"{self.role} server {replica.url}"
        message = self.redact(server_message(response))
        if status >= 500 or status == 429:
            raise _Retryable(f"HTTP {status}: {message}", retry_after(response))
        if status in (401, 403):
            hint = (
                f"check the key in ${self.api_key_env}"
                if self.api_key_env
                else f"set {self.role}_api_key_env to the variable that holds the key"
            )
            raise ConfigError(f"{where} refused the request (HTTP {status}): {hint}")
        if status == 404:
            raise NotFound(f"{where} has no {path} (HTTP 404): {message}")
        raise BackendError(f"{where} rejected {path} (HTTP {status}): {message}")

    def _json(self, response: httpx.Response, replica: Replica, path: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise BackendError(
                f"{self.role} server {replica.url}: malformed answer to {path} (not JSON): "
                f"{first_line(response.text, 80)!r}"
            ) from None


async def _events(response: httpx.Response, pool: Pool, replica: Replica) -> AsyncIterator[dict[str, Any]]:
    """Server-sent events: `data: {json}` lines until `data: [DONE]`; comments and pings skipped."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError:
            raise BackendError(
                f"{pool.role} server {replica.url}: malformed stream event {first_line(data, 80)!r}"
            ) from None
        if not isinstance(event, dict):
            raise BackendError(f"{pool.role} server {replica.url}: malformed stream event {data[:80]!r}")
        if "error" in event and "choices" not in event:  # vLLM reports failures inside the stream
            error = event["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise BackendError(f"{pool.role} server {replica.url}: {first_line(str(message))}")
        yield event
