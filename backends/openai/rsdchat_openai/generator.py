"""Steps written by a model on an OpenAI-compatible server, streamed token by token.

Each step is one streamed `/v1/completions` request whose prompt is the chat
header plus the reply so far. vLLM stops at the step delimiter itself and keeps it
(`include_stop_str_in_output`); with other servers the client watches the stream
for the delimiter and closes the connection there, which stops the server. Token
counts come from the server's `usage` where it sends one.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from rsdchat.plugin_api import (
    BackendError,
    Context,
    Feature,
    FinishReason,
    Generation,
    Logprobs,
    ModelInfo,
    RsdchatError,
    StepRequest,
    TokenSink,
    Usage,
    ends_a_step,
    kept_of,
    step_end,
)
from rsdchat.plugin_api import ContextFull as ContextFullError
from rsdchat_openai.http import Pool
from rsdchat_openai.wire import Headers, ServerInfo, guess_params, token_ids

# What servers answer when the prompt leaves no room for one more token: vLLM (its request
# checks, or `max_tokens` clamped to what is left of the context: 0), llama-cpp-python, OpenAI.
_CONTEXT_FULL = re.compile(
    r"max_tokens must be at least 1, got 0|maximum context length|maximum model length"
    r"|exceeds? (?:the )?context window|context_length_exceeded",
    re.IGNORECASE,
)
_CONTEXT_SIZE = re.compile(
    r"(?:maximum context length is|maximum model length (?:is|of)|context window of)\s*(\d+)", re.IGNORECASE
)
LONGER_CONTEXT = "serve the model with a longer context"


class ContextFull(ContextFullError):
    """The conversation leaves no room in a model's context: one line saying what to do."""

    def __init__(self, role: str, size: int | None, hint: str = LONGER_CONTEXT) -> None:
        self.role, self.size = role, size
        tokens = f" ({size} tokens)" if size else ""
        super().__init__(f"the conversation fills the {role}'s context{tokens}: start a new chat or {hint}")


def prefill(usage: Any) -> int:
    """Prompt tokens the server had to read: prompt_tokens less those it found in its prefix cache."""
    prompt = usage.get("prompt_tokens")
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return max(0, int(prompt or 0) - int(cached or 0))


class _StepReader:
    """Folds streamed completion chunks into one step."""

    def __init__(self, request: StepRequest, on_token: TokenSink | None, malformed: str) -> None:
        self.stops = request.stop
        self.on_token = on_token
        self.malformed = malformed
        self.text = ""
        self.logprobs: list[float] = []
        self.chunks = 0  # token-sized pieces seen, for servers that send no usage
        self.stopped = False  # a stop string was seen in the text
        self.finish: str | None = None
        self.stop_reason: object = None
        self.usage: dict[str, Any] | None = None  # of the request being read
        self.spent = Usage()  # by the requests before it (a step that went on past a stop)
        self.events = 0  # stream events seen

    def feed(self, event: dict[str, Any]) -> bool:
        """Take one event; True once the step is complete."""
        self.events += 1
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        choices = event.get("choices", [])
        if not isinstance(choices, list):
            raise BackendError(f"{self.malformed}: `choices` is not a list")
        for choice in choices:
            if not isinstance(choice, dict) or not isinstance(choice.get("text", ""), str):
                raise BackendError(f"{self.malformed}: a choice without text")
            if choice.get("finish_reason"):
                self.finish, self.stop_reason = choice["finish_reason"], choice.get("stop_reason")
            if self.stopped:
                continue
            logprobs = choice.get("logprobs")
            values = (logprobs.get("token_logprobs") or []) if isinstance(logprobs, dict) else []
            self.logprobs += [float(v) for v in values if isinstance(v, int | float)]
            self.chunks += len(values) or bool(choice.get("text"))  # a bare finish chunk holds no token
            self._add(choice.get("text", ""))
        return self.stopped

    def _add(self, piece: str) -> None:
        end = step_end(self.text, piece, self.stops)
        if end is not None:
            piece, self.stopped = (self.text + piece)[len(self.text) : end], True
        self.text += piece
        if piece and self.on_token is not None:
            self.on_token(piece)

    def goes_on(self) -> bool:
        """Whether the step goes on in another request: the server stopped at a stop string that
        `ends_a_step` passes over (vLLM stops at the ". " of "1. " itself). The stop's text is
        then in the step (written back if the server left it out), and what the request spent
        is kept in `spent`."""
        stop = self.stop_reason
        if self.stopped or self.finish != "stop" or not isinstance(stop, str) or stop not in self.stops:
            return False
        if ends_a_step(self.text.removesuffix(stop), stop):
            return False
        if not self.text.endswith(stop):
            self._add(stop)
        if self.usage is not None:
            self.spent += Usage(prefill(self.usage), int(self.usage.get("completion_tokens") or 0))
        self.finish = self.stop_reason = self.usage = None
        return True

    def finish_reason(self, where: str, hint: str = "") -> FinishReason:
        """How the step ended (adding back a stop string the server matched but left out)."""
        if self.stopped:
            return "step"
        if self.finish == "length":
            return "length"
        if self.finish == "stop":
            if isinstance(self.stop_reason, str) and self.stop_reason in self.stops:
                self._add(kept_of(self.stop_reason))  # a server that matched the stop but left it out
                return "step"
            return "eos"
        if self.finish is None:
            raise BackendError(f"{where}: the answer stream ended without a finish reason (truncated){hint}")
        raise BackendError(f"{where}: the server ended the step with finish_reason {self.finish!r}")


class HttpGenerator:
    """A `StepGenerator` on an OpenAI-compatible server (one role, one served model).

    It cannot check a proposal (`reuse_draft`): a server writes a step in one request and
    has no way to take given tokens as far as it agrees with them, so none is declared.
    """

    features = frozenset({Feature.SAMPLING})

    def __init__(
        self, pool: Pool, server: ServerInfo, model: str, headers: Headers, *, logprobs: bool
    ) -> None:
        self.info = ModelInfo(name=model, n_params=guess_params(model), backend="openai")
        self.pool = pool
        self.server = server
        self.model = model
        self._headers = headers
        self._logprobs = logprobs  # ask for the sampled tokens' log-probabilities

    async def prompt(self, context: Context) -> str:
        """The text the model continues: chat header, then the reply so far, verbatim."""
        return await self._headers.header(context.messages) + context.response

    @contextlib.contextmanager
    def _context_full(self) -> Iterator[None]:
        """A server's own words for a full context become a ContextFull (the role, its size)."""
        try:
            yield
        except ContextFull:
            raise
        except BackendError as exc:
            if not _CONTEXT_FULL.search(str(exc)):
                raise
            said = _CONTEXT_SIZE.search(str(exc))
            size = self.server.contexts.get(self.model) or (int(said.group(1)) if said else None)
            raise ContextFull(self.pool.role, size) from None

    async def generate(
        self, context: Context, request: StepRequest, on_token: TokenSink | None = None
    ) -> Generation:
        with self._context_full():
            return await self._generate(context, request, on_token)

    async def _generate(
        self, context: Context, request: StepRequest, on_token: TokenSink | None
    ) -> Generation:
        started = time.perf_counter()
        dialect = self.server.dialect
        prompt = await self.prompt(context)
        where = f"{self.pool.role} server ({self.model})"
        reader = _StepReader(request, on_token, f"{where}: malformed stream chunk")
        while True:
            left = replace(request, max_tokens=request.max_tokens - reader.chunks)
            events = self.pool.stream("/v1/completions", self._body(prompt + reader.text, left))
            async with contextlib.aclosing(events):
                async for event in events:
                    if reader.feed(event) and not dialect.server_stop:
                        break  # leaving the stream closes the connection: the server stops
            if reader.chunks >= request.max_tokens or not reader.goes_on():
                break
        if reader.finish is None and not reader.stopped and not reader.events:
            await self._why_silent(prompt, request, where)  # a stream that closed without a word
        finish = reader.finish_reason(
            where, f"; {dialect.truncation_hint}" if dialect.truncation_hint else ""
        )
        if reader.usage is not None:
            usage = Usage(prefill(reader.usage), int(reader.usage.get("completion_tokens") or 0))
            usage += reader.spent
        else:  # count what streamed; an end-of-sequence token was sampled but not sent
            prompt_tokens = await self._count_prompt(prompt) if dialect.count_path else None
            usage = Usage(prompt_tokens or 0, reader.chunks + (finish == "eos"))
        usage.seconds = time.perf_counter() - started
        logprobs = tuple(reader.logprobs) if self._logprobs and reader.logprobs else None
        return Generation(reader.text, finish, usage, logprobs)

    async def _why_silent(self, prompt: str, request: StepRequest, where: str) -> None:
        """Ask again without streaming: a server that failed before the first token (llama-cpp-python
        on a prompt longer than its context, say) answers that with its own error message."""
        body = {**self._body(prompt, request), "stream": False, "max_tokens": 1}
        body.pop("stream_options", None)
        await self.pool.post("/v1/completions", body)  # its error, if any, is the answer

    def _body(self, prompt: str, request: StepRequest) -> dict[str, Any]:
        dialect = self.server.dialect
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream": True,
            **dialect.sampling,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if dialect.server_stop:
            body["stop"] = list(request.stop)
        if dialect.stream_usage:
            body["stream_options"] = {"include_usage": True}
        if self._logprobs:
            body["logprobs"] = 0  # only the sampled token's
        return body

    async def _count_prompt(self, prompt: str) -> int | None:
        """Prompt tokens, from a server whose stream carries no usage (best effort).

        Asked after the stream: llama-cpp-python (by default) cuts a running stream
        short when another request arrives.
        """
        assert self.server.dialect.count_path is not None
        try:
            body = await self.pool.post(
                self.server.dialect.count_path, {"model": self.model, "input": prompt}
            )
        except RsdchatError:  # the step itself reports what is wrong with the server
            return None
        count = body.get("count") if isinstance(body, dict) else None
        return count if isinstance(count, int) else None


class HttpLogprobGenerator(HttpGenerator):
    """Also a `LogprobModel`: scores a given continuation with vLLM's prompt log-probabilities."""

    async def logprobs(self, context: Context, continuation: str) -> Logprobs:
        with self._context_full():
            return await self._score(context, continuation)

    async def _score(self, context: Context, continuation: str) -> Logprobs:
        started = time.perf_counter()
        if not continuation:
            return Logprobs((), Usage(seconds=time.perf_counter() - started))
        prefix = await self.prompt(context)
        tokenize = {"model": self.model, "prompt": prefix, "add_special_tokens": False}
        score = {
            "model": self.model,
            "prompt": prefix + continuation,
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": 0,
            "add_special_tokens": False,
        }
        before, answer = await asyncio.gather(
            self.pool.post("/tokenize", tokenize), self.pool.post("/v1/completions", score)
        )
        ids, values = await self._prompt_logprobs(answer, prefix + continuation)
        start = _common_prefix(token_ids(before, self.pool), ids)
        scores = values[start:]
        if not all(isinstance(v, float) and not math.isnan(v) for v in scores):
            raise BackendError(
                f"{self.pool.role} server ({self.model}): prompt_logprobs missing for the continuation"
            )
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
        spent = Usage(prefill(usage), int(usage.get("completion_tokens") or 0), time.perf_counter() - started)
        return Logprobs(tuple(float(v) for v in scores if v is not None), spent)

    async def _prompt_logprobs(self, answer: Any, prompt: str) -> tuple[list[int | None], list[float | None]]:
        """Token ids and log-probabilities of the prompt, from a vLLM completion's `prompt_logprobs`.

        Each entry maps token id -> {logprob, rank, decoded_token}; the first is null.
        With prompt_logprobs=0 an entry holds only the prompt token; if a server adds
        more, the prompt's ids come from /tokenize.
        """
        malformed = f"{self.pool.role} server ({self.model}): malformed prompt_logprobs"
        try:
            entries = answer["choices"][0]["prompt_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"{malformed} (none in the answer)") from None
        if not isinstance(entries, list) or not all(e is None or isinstance(e, dict) for e in entries):
            raise BackendError(malformed)
        if all(e is None or len(e) == 1 for e in entries):
            ids: list[int | None] = [None if e is None else int(next(iter(e))) for e in entries]
        else:
            body = {"model": self.model, "prompt": prompt, "add_special_tokens": False}
            ids = list(token_ids(await self.pool.post("/tokenize", body), self.pool))
        if len(ids) != len(entries):
            raise BackendError(f"{malformed} ({len(entries)} entries for {len(ids)} prompt tokens)")
        values: list[float | None] = []
        for token, entry in zip(ids, entries, strict=True):
            item = entry.get(str(token)) if entry is not None else None
            value = item.get("logprob") if isinstance(item, dict) else None
            values.append(float(value) if isinstance(value, int | float) else None)
        return ids, values


def _common_prefix(known: list[int], ids: list[int | None]) -> int:
    """How many leading tokens agree (an unknown id, the first one, matches anything)."""
    n = 0
    for a, b in zip(known, ids, strict=False):
        if b is not None and a != b:
            break
        n += 1
    return n
