"""`rsdchat serve`'s request parsing: what a body becomes (`Ask`), and each bad body's one-line 400."""

from __future__ import annotations

from typing import Any

import pytest

from rsdchat.core.policy import Mode
from rsdchat.core.types import Message
from rsdchat.serve.requests import RSD_KEYS, BadRequest, parse
from rsdchat.settings import Settings

SERVER = Settings(draft="tiny-draft", target="tiny-target", reward="draft-confidence", max_tokens=96)
USER = [{"role": "user", "content": "What is 12 times 7?"}]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "rsd", "messages": USER} | fields


def refused(body: object, *, is_chat: bool = True) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        parse(body, SERVER, chat=is_chat)
    return caught.value


def test_a_plain_chat_request() -> None:
    ask = parse(chat(), SERVER, chat=True)
    assert ask.model == "rsd" and ask.chat and not ask.stream and not ask.include_usage
    assert ask.messages == [Message("user", "What is 12 times 7?")]
    assert ask.system is None and ask.stop == ()
    assert ask.settings == SERVER.replace(mode=Mode.RSD)


def test_standard_fields_become_settings() -> None:
    ask = parse(
        chat(
            temperature=0.5,
            top_p=0.9,
            seed=7,
            max_tokens=40,
            stop=["\n\n\n", "END"],
            stream=True,
            stream_options={"include_usage": True},
            user="someone",
            presence_penalty=0,
            n=1,
            tools=[],
        ),
        SERVER,
        chat=True,
    )
    settings = ask.settings
    assert (settings.temperature, settings.top_p, settings.seed, settings.max_tokens) == (0.5, 0.9, 7, 40)
    assert ask.stop == ("\n\n\n", "END") and ask.stream and ask.include_usage
    assert parse(chat(max_completion_tokens=5, max_tokens=50), SERVER, chat=True).settings.max_tokens == 5
    assert parse(chat(stop="END"), SERVER, chat=True).stop == ("END",)


def test_the_rsd_object_sets_rsd_settings() -> None:
    rsd = {"delta": 0.25, "weighting": "clip", "max_steps": 4, "max_step_tokens": 16}
    settings = parse(chat(rsd=rsd), SERVER, chat=True).settings
    assert (settings.delta, settings.weighting, settings.max_steps, settings.max_step_tokens) == (
        0.25,
        "clip",
        4,
        16,
    )
    assert settings.mode is Mode.RSD
    assert set(RSD_KEYS) >= set(rsd)


@pytest.mark.parametrize(
    ("model", "mode"),
    [("rsd", Mode.RSD), ("rsd-target-only", Mode.TARGET_ONLY), ("rsd-draft-only", Mode.DRAFT_ONLY)],
)
def test_each_model_is_a_mode(model: str, mode: Mode) -> None:
    assert parse(chat(model=model), SERVER, chat=True).settings.mode is mode


def test_system_and_text_parts() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use digits."},
        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "2+2?"},
    ]
    ask = parse(chat(messages=messages), SERVER, chat=True)
    assert ask.system == "Be brief.\n\nUse digits."
    assert [m.content for m in ask.messages] == ["Hi there", "Hello.", "2+2?"]


def test_a_completion_prompt() -> None:
    ask = parse({"model": "rsd", "prompt": ["Say hi"]}, SERVER, chat=False)
    assert ask.messages == [Message("user", "Say hi")] and not ask.chat


BAD: list[tuple[str, object, int, str, str | None]] = [  # case, body, status, in the message, param
    ("not an object", [1, 2], 400, "JSON object", None),
    ("no model", {"messages": USER}, 400, "model", "model"),
    ("unknown model", chat(model="gpt-4o"), 404, "'gpt-4o' does not exist", "model"),
    ("unknown field", chat(frobnicate=1), 400, "'frobnicate'", "frobnicate"),
    ("no messages", {"model": "rsd"}, 400, "messages must be a non-empty list", "messages"),
    ("empty messages", chat(messages=[]), 400, "messages must be a non-empty list", "messages"),
    ("messages not a list", chat(messages="hi"), 400, "messages must be a non-empty list", "messages"),
    ("message not an object", chat(messages=["hi"]), 400, "messages[0] must be an object", "messages[0]"),
    (
        "last message not user",
        chat(messages=[*USER, {"role": "assistant", "content": "84"}]),
        400,
        "last",
        "messages",
    ),
    ("tool role", chat(messages=[{"role": "tool", "content": "x"}]), 400, "role", "messages[0]"),
    ("no content", chat(messages=[{"role": "user"}]), 400, "content", "messages[0].content"),
    (
        "image part",
        chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
        400,
        "only text parts",
        "messages[0].content",
    ),
    (
        "system after the conversation",
        chat(messages=[*USER, {"role": "system", "content": "s"}, *USER]),
        400,
        "system message",
        "messages[1]",
    ),
    ("temperature a string", chat(temperature="hot"), 400, "temperature must be a number", "temperature"),
    ("temperature negative", chat(temperature=-1), 400, "temperature", "temperature"),
    ("temperature NaN", chat(temperature=float("nan")), 400, "temperature must be a number", "temperature"),
    ("top_p zero", chat(top_p=0), 400, "top_p", "top_p"),
    ("seed fractional", chat(seed=1.5), 400, "seed", "seed"),
    ("stream a string", chat(stream="yes"), 400, "stream must be true or false", "stream"),
    ("stream_options a string", chat(stream_options="x"), 400, "stream_options", "stream_options"),
    ("stop empty", chat(stop=""), 400, "stop", "stop"),
    ("stop too many", chat(stop=[str(i) for i in range(17)]), 400, "stop", "stop"),
    ("n=2", chat(n=2), 400, "n must be 1", "n"),
    (
        "tools",
        chat(tools=[{"type": "function", "function": {"name": "f"}}]),
        400,
        "tools are not supported",
        "tools",
    ),
    ("tool_choice", chat(tool_choice="auto"), 400, "tool_choice", "tool_choice"),
    ("logprobs", chat(logprobs=True), 400, "logprobs", "logprobs"),
    (
        "json response_format",
        chat(response_format={"type": "json_object"}),
        400,
        "response_format",
        "response_format",
    ),
    ("max_tokens 10**9", chat(max_tokens=10**9), 400, "above this server's limit of 96", "max_tokens"),
    ("max_tokens 0", chat(max_tokens=0), 400, "max_tokens", "max_tokens"),
    ("max_tokens fractional", chat(max_tokens=2.5), 400, "whole number", "max_tokens"),
    ("max_tokens true", chat(max_tokens=True), 400, "max_tokens must be a number", "max_tokens"),
    ("rsd not an object", chat(rsd="fast"), 400, "rsd must be an object", "rsd"),
    ("rsd unknown key", chat(rsd={"bogus": 1}), 400, "rsd.bogus is not a setting", "rsd"),
    ("rsd.delta a string", chat(rsd={"delta": "x"}), 400, "rsd.delta", "rsd.delta"),
    ("rsd.weighting unknown", chat(rsd={"weighting": "nope"}), 400, "rsd.weighting", "rsd.weighting"),
    ("rsd.reward unknown", chat(rsd={"reward": "nope"}), 400, "rsd.reward", "rsd.reward"),
    (
        "rsd.max_steps above",
        chat(rsd={"max_steps": 10**6}),
        400,
        "above this server's limit",
        "rsd.max_steps",
    ),
    (
        "rsd.max_step_tokens 0",
        chat(rsd={"max_step_tokens": 0}),
        400,
        "rsd.max_step_tokens",
        "rsd.max_step_tokens",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "said", "param"), [case[1:] for case in BAD], ids=[c[0] for c in BAD]
)
def test_a_bad_chat_body_is_refused_in_one_line(
    body: object, status: int, said: str, param: str | None
) -> None:
    error = refused(body)
    assert error.status == status
    assert said in error.message and "\n" not in error.message
    assert error.param == param
    shape = error.body()["error"]
    assert set(shape) == {"message", "type", "param", "code"} and shape["message"] == error.message
    assert shape["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"model": "rsd"}, "prompt must be a non-empty string"),
        ({"model": "rsd", "prompt": ""}, "prompt must be a non-empty string"),
        ({"model": "rsd", "prompt": ["a", "b"]}, "one prompt per request"),
        ({"model": "rsd", "prompt": [1, 2, 3]}, "prompt must be a non-empty string"),
        ({"model": "rsd", "prompt": "x", "messages": USER}, "unknown field 'messages'"),
        ({"model": "rsd", "prompt": "x", "echo": True}, "echo"),
        ({"model": "rsd", "prompt": "x", "best_of": 3}, "best_of must be 1"),
    ],
)
def test_a_bad_completion_body_is_refused(body: object, said: str) -> None:
    assert said in refused(body, is_chat=False).message


def test_null_means_the_default() -> None:
    """OpenAI treats null as "not given": clients that serialise every field send `"n": null`."""
    ask = parse(chat(n=None, stream=None, temperature=None, max_tokens=None, stop=None), SERVER, chat=True)
    assert not ask.stream and ask.settings.max_tokens == SERVER.max_tokens


def test_bad_request_bodies_by_status() -> None:
    kinds = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error"}
    kinds |= {429: "rate_limit_error", 500: "server_error", 503: "server_error", 400: "invalid_request_error"}
    for status, kind in kinds.items():
        assert BadRequest("x", status=status).body()["error"]["type"] == kind
