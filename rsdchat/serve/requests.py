"""What a client asks `rsdchat serve`: an OpenAI request body, checked, as settings and messages.

Standard fields are honoured (`messages`/`prompt`, `max_tokens`, `temperature`, `top_p`,
`seed`, `stop`, `stream`, `stream_options`) or, where they would change what is written and
RSD cannot do them (`n > 1`, `tools`, `logprobs`, a JSON `response_format`), refused in one
line, as are penalties and `logit_bias` away from their defaults; fields that change nothing
here (`user`, `metadata`, `store`, …) are accepted. RSD's own control is the extension object
`rsd` (what the openai SDK sends as `extra_body={"rsd": {...}}`): an unknown key or a value out
of range is a 400 naming it.
A request's settings are the server's with the request's changes (`Settings.replace`), never
past the operator's budgets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rsdchat.core.errors import ConfigError
from rsdchat.core.policy import Mode
from rsdchat.core.types import Message
from rsdchat.settings import Settings

MODELS: dict[str, Mode] = {
    "rsd": Mode.RSD,
    "rsd-target-only": Mode.TARGET_ONLY,
    "rsd-draft-only": Mode.DRAFT_ONLY,
}
"""The served model ids: one configuration each, so a client A/B-tests by switching the model name."""

RSD_KEYS = ("delta", "weighting", "alpha", "p", "beta", "reward", "mode", "max_steps", "max_step_tokens")
"""What a request may set in its `rsd` object (each a setting of the same name)."""

BUDGETS = ("max_steps", "max_step_tokens", "max_tokens")  # a request may lower these, never raise them
IGNORED = {  # standard fields that change nothing here, at these values
    "user": None,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logit_bias": None,
    "metadata": None,
    "store": None,
    "service_tier": None,
    "parallel_tool_calls": None,
    "stream_options": None,
    "logprobs": False,
    "top_logprobs": None,
    "tool_choice": "none",
    "response_format": {"type": "text"},
    "echo": False,
    "best_of": 1,
    "suffix": None,
}


class BadRequest(Exception):
    """A request the server refuses: an OpenAI-shaped error with its status (400, 401, 404, 413, …)."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code

    def body(self) -> dict[str, Any]:
        kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}
        kind |= {413: "invalid_request_error", 500: "server_error", 503: "server_error"}
        return {
            "error": {
                "message": self.message,
                "type": kind.get(self.status, "invalid_request_error"),
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass(frozen=True)
class Ask:
    """One request, checked: what to answer, with which settings, and how to send it back."""

    model: str
    messages: list[Message]  # the conversation, ending with the user's turn; no system turn
    system: str | None  # the client's system prompt (None: the settings')
    settings: Settings  # the server's, with the request's changes
    stream: bool
    include_usage: bool
    stop: tuple[str, ...]  # the client's stop strings: the answer ends before the first one written
    chat: bool  # /v1/chat/completions (else /v1/completions)


def parse(body: object, server: Settings, *, chat: bool) -> Ask:
    """The request `body` as an `Ask`; BadRequest (naming the field) when it cannot be served."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    known = {"model", "stream", "rsd", "max_tokens", "max_completion_tokens", "temperature", "top_p"}
    known |= {"seed", "stop", "n", "tools", "functions", *IGNORED, "messages" if chat else "prompt"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}", param=unknown[0])
    model = _text(body, "model", required=True)
    if model not in MODELS:
        raise BadRequest(
            f"the model {model!r} does not exist; served: {', '.join(MODELS)}",
            param="model",
            status=404,
            code="model_not_found",
        )
    _refused(body)
    system, messages = _messages(body) if chat else (None, [Message("user", _prompt(body))])
    changes = _changes(body, server)
    changes.setdefault("mode", MODELS[model])
    try:
        settings = server.replace(**changes)
    except ConfigError as exc:
        raise refused_setting(exc) from None
    stream = body.get("stream")
    stream = False if stream is None else stream  # null: the default, as OpenAI takes it
    if not isinstance(stream, bool):
        raise BadRequest("stream must be true or false", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage", "continuous_usage_stats"}:
        raise BadRequest("stream_options takes include_usage", param="stream_options")
    return Ask(
        model=model,
        messages=messages,
        system=system,
        settings=settings,
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        stop=_stop(body),
        chat=chat,
    )


def refused_setting(error: ConfigError) -> BadRequest:
    """A setting's ConfigError ("setting delta: …") as a 400 naming the field as the request does."""
    said = str(error).removeprefix("setting ")
    field = said.partition(":")[0]
    if field in RSD_KEYS:
        return BadRequest(f"rsd.{said}", param=f"rsd.{field}")
    return BadRequest(said, param=field if field in IGNORED or field.isidentifier() else None)


def _text(body: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise BadRequest(f"{key} must be {'a non-empty ' if required else ''}string", param=key)
    return value


def _refused(body: Mapping[str, Any]) -> None:
    """Standard fields that would change the answer in ways RSD does not do: one line each."""
    n = body.get("n")
    if n is not None and n != 1:  # null: the default, as OpenAI takes it
        raise BadRequest("n must be 1: rsdchat writes one answer per request", param="n")
    for key in ("tools", "functions"):
        if body.get(key):
            raise BadRequest(f"{key} are not supported: rsdchat answers in text only", param=key)
    for key, harmless in IGNORED.items():
        value = body.get(key)
        if key in ("logprobs", "echo") and value:
            raise BadRequest(f"{key} is not supported by rsdchat", param=key)
        if key in ("presence_penalty", "frequency_penalty", "logit_bias") and value:
            raise BadRequest(f"{key} is not supported by rsdchat (leave it at its default)", param=key)
        if key == "best_of" and value not in (None, 1):
            raise BadRequest("best_of must be 1", param=key)
        if key == "response_format" and value not in (None, harmless):
            raise BadRequest("response_format must be text: rsdchat does not constrain its output", param=key)
        if key == "tool_choice" and value not in (None, harmless):
            raise BadRequest("tool_choice must be none: rsdchat answers in text only", param=key)


def _content(value: object, where: str) -> str:
    """A message's content: a string, or a list of text parts (images refused)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise BadRequest(f"{where}: only text parts are supported", param=where)
            texts.append(part["text"])
        return "".join(texts)
    raise BadRequest(f"{where} must be a string or a list of text parts", param=where)


def _messages(body: Mapping[str, Any]) -> tuple[str | None, list[Message]]:
    """The client's system prompt (None: none given) and the conversation ending with a user turn."""
    given = body.get("messages")
    if not isinstance(given, list) or not given:
        raise BadRequest("messages must be a non-empty list", param="messages")
    system: list[str] = []
    messages: list[Message] = []
    for i, message in enumerate(given):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest(f"{where} must be an object", param=where)
        role = message.get("role")
        content = _content(message.get("content"), f"{where}.content")
        if role in ("system", "developer"):
            if messages:
                raise BadRequest(f"{where}: a system message comes before the conversation", param=where)
            system.append(content)
        elif role in ("user", "assistant"):
            messages.append(Message(role, content))
        else:
            raise BadRequest(f"{where}.role must be system, user or assistant, got {role!r}", param=where)
    if not messages or messages[-1].role != "user":
        raise BadRequest("the last message must be the user's", param="messages")
    return ("\n\n".join(system) if system else None), messages


def _prompt(body: Mapping[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequest("prompt must be a non-empty string (one prompt per request)", param="prompt")
    return prompt


def _changes(body: Mapping[str, Any], server: Settings) -> dict[str, Any]:
    """The request's settings changes: `rsd` keys and the standard sampling and length fields."""
    rsd = body.get("rsd") or {}
    if not isinstance(rsd, dict):
        raise BadRequest("rsd must be an object of settings", param="rsd")
    unknown = sorted(set(rsd) - set(RSD_KEYS))
    if unknown:
        raise BadRequest(f"rsd.{unknown[0]} is not a setting; rsd takes: {', '.join(RSD_KEYS)}", param="rsd")
    changes: dict[str, Any] = dict(rsd)
    for key, setting in (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed")):
        if body.get(key) is not None:
            changes[setting] = _number(body[key], key)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        changes["max_tokens"] = _number(limit, "max_tokens", whole=True)
    for key in BUDGETS:
        value = changes.get(key)
        ceiling = getattr(server, key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > ceiling:
            name = key if key == "max_tokens" else f"rsd.{key}"
            raise BadRequest(f"{name} {value} is above this server's limit of {ceiling}", param=name)
    return changes


def _number(value: object, key: str, *, whole: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{key} must be a number", param=key)
    if whole and value != int(value):
        raise BadRequest(f"{key} must be a whole number", param=key)
    return int(value) if whole or isinstance(value, int) else value


def _stop(body: Mapping[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 16:
        raise BadRequest("stop must be a string or a list of up to 16 non-empty strings", param="stop")
    return tuple(stops)
