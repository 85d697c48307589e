"""A chat's reward sources: a reward server given in the chat (`/reward orm URL`), and step delimiters.

`OrmServer` is a real HTTP server on 127.0.0.1 speaking vLLM's `/v1/models` and `/classify`
as rsdchat's `orm` reward source uses them, so these tests (and the app's, in test_tui.py)
go through the real openai plugin, its HTTP client and a socket.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import pytest
from test_chat_session import Chat, data_dir, make_runtime, open_chat, shape

from rsdchat.chat.commands import parse_command, server_rewards
from rsdchat.chat.knobs import Knobs
from rsdchat.chat.rewards import Rewards, in_chat
from rsdchat.errors import ConfigError
from rsdchat.settings import Settings
from rsdchat.testing import installed

__all__ = ["OrmServer", "data_dir"]

needs_openai = pytest.mark.skipif(not installed("rsdchat-openai"), reason="needs the rsdchat-openai plugin")


def by_reply(reply: str) -> float:
    """An outcome score for the reply so far: a reply with a wrong sentence scores below 0."""
    return -1.5 if "wrong" in reply else 2.0 + 0.1 * len(reply.split())


class OrmServer:
    """vLLM serving one sequence-classification model: GET /v1/models and POST /classify."""

    def __init__(self, score: Callable[[str], float] = by_reply, model: str = "tiny-orm") -> None:
        self.score, self.model = score, model
        self.replies: list[str] = []  # the assistant text of each /classify request
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path != "/v1/models":
                    return self._send(404, {"detail": "Not Found"})
                card = {"id": server.model, "object": "model", "owned_by": "vllm", "max_model_len": 4096}
                return self._send(200, {"object": "list", "data": [card]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/classify":
                    return self._send(404, {"detail": "Not Found"})
                if body.get("model") != server.model:
                    return self._send(
                        404, {"object": "error", "message": f"model {body.get('model')} not found"}
                    )
                reply = body["messages"][-1]["content"]
                server.replies.append(reply)
                tokens = sum(len(m["content"].split()) for m in body["messages"])
                row = {"index": 0, "label": "LABEL_0", "probs": [server.score(reply)], "num_classes": 1}
                usage = {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}
                return self._send(200, {"id": "classify-1", "object": "list", "data": [row], "usage": usage})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OrmServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def orm_server() -> Iterator[OrmServer]:
    with OrmServer() as server:
        yield server


PROSE = [
    "Paris is the capital of France.\n\n",
    "It is wrong to say it is small.\n\n",
    "It has many museums.\n\n",
]
PROSE_TARGET = ["Paris is in France.\n\n", "It is a large city.\n\n", "Bye.\n\n"]


@needs_openai
async def test_a_reward_server_given_in_the_chat_judges_the_steps(orm_server: OrmServer) -> None:
    chat = await open_chat(PROSE, PROSE_TARGET)
    await chat.session.command(f"/reward orm {orm_server.url}")
    knobs = chat.session.knobs
    assert (knobs.reward, knobs.reward_url, knobs.delta, knobs.style) == ("orm", orm_server.url, None, None)
    reward = chat.session.reward
    assert reward is not None and reward.kind == "outcome" and reward.bounds is None
    status = dict(chat.session.status().rows)
    assert (status["reward"], status["server"], status["style"]) == ("orm", orm_server.url, "chat (auto)")
    trace = await chat.ask("Tell me about Paris")
    assert shape(chat.steps()) == [
        (0, "draft", pytest.approx(2.6), True),
        (1, "draft", -1.5, False),
        (1, "target", None, True),
        (2, "draft", pytest.approx(3.5), True),
        (3, "draft", None, True),  # the draft ends the reply: an empty step, not judged
    ]
    assert trace.finish_reason == "eos" and trace.text.startswith("Paris is the capital")
    # the server scored the reply so far, each time with the step being judged at its end
    assert orm_server.replies[:2] == ["Paris is the capital of France.", PROSE[0] + PROSE[1].strip()]
    step = chat.records("step")[0]
    assert step["reward_source"] == "orm" and step["reward_bounds"] is None
    assert step["decision"]["weighting"] == {"name": "binary", "delta": 0.0}
    user = chat.records("user")[0]
    assert user["in_force"]["reward_url"] == orm_server.url and user["in_force"]["style"] == "chat"


@needs_openai
async def test_a_served_reward_without_a_server_says_what_to_type(orm_server: OrmServer) -> None:
    chat = await open_chat()
    before = chat.session.knobs
    with pytest.raises(ConfigError) as caught:
        await chat.session.command("/reward orm")
    assert str(caught.value) == "reward orm needs the reward server's URL: type /reward orm http://HOST:PORT"
    assert chat.session.knobs == before
    with pytest.raises(ConfigError, match=r"model 'other' is not served by .* type /reward orm http://"):
        await chat.session.command(f"/reward orm {orm_server.url} other")
    await chat.session.command(f"/reward orm {orm_server.url} tiny-orm")  # what the message said works
    assert chat.session.knobs.reward_model == "tiny-orm" and chat.session.reward is not None


@needs_openai
async def test_settings_naming_a_served_reward_open_the_chat_to_be_fixed_in_it(orm_server: OrmServer) -> None:
    runtime = make_runtime(PROSE, PROSE_TARGET)
    runtime.settings = runtime.settings.replace(reward="orm")
    runtime.reward = None  # as open_models leaves it: the chat builds its rewards
    chat = Chat(runtime)
    await chat.session.open()
    assert chat.session.policy is None and chat.session.runtime is not None
    why = chat.session.why_not_ask()
    assert why is not None and "type /reward orm http://HOST:PORT" in why
    await chat.session.command(f"/reward orm {orm_server.url}")
    assert chat.session.why_not_ask() is None
    assert (await chat.ask("Tell me about Paris")).text


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/reward judge http://127.0.0.1:9", "reward judge does not use a reward server; a URL is for: "),
        ("/reward orm ftp://x", "'ftp://x' is not an http(s) URL"),
        ("/reward orm http://x a b", "one model name after the URL, got 'a b'"),
        ("/reward http://x", "the reward's name comes first"),
        ("/steps words", "choose one of: paragraph (blank line), line (line break), sentence"),
    ],
)
async def test_bad_reward_and_steps_commands_change_nothing(line: str, message: str) -> None:
    chat = await open_chat()
    before = chat.session.knobs
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await chat.session.command(line)
    assert chat.session.knobs == before


@needs_openai
def test_the_reward_context_carries_the_chat_server() -> None:
    assert {"orm", "qwen-prm"} <= set(server_rewards())
    rewards = Rewards(Settings())
    knobs = Knobs(reward="orm", reward_url="http://127.0.0.1:1234", reward_model="rm")
    config = rewards.configs(knobs)["openai"]
    assert (config.reward_url, config.reward_model) == ("http://127.0.0.1:1234", "rm")  # type: ignore[attr-defined]
    assert rewards.configs(Knobs(reward="orm")) == dict(Settings().backends)
    assert rewards.key(knobs) == ("orm", "http://127.0.0.1:1234", "rm", "\n\n")
    assert rewards.key(Knobs(reward="judge", steps="line")) == ("judge", None, None, "")  # reads no delimiter
    name, rest = parse_command("/reward qwen-prm http://gpu:8000")
    assert name == "reward" and rest == "qwen-prm http://gpu:8000"


def test_in_chat_rewrites_flags_as_commands() -> None:
    knobs = Knobs(reward="orm", reward_url="http://h:1")
    served = "reward model 'x' is not served by http://h:1 (it serves: a, b)"
    served += "; pass --reward-model with one of those names"
    assert in_chat(served, knobs).endswith("(it serves: a, b); type /reward orm http://h:1 MODEL")
    choose = "setting reward_model: reward server http://h:1 serves a, b; say which one to use"
    assert in_chat(choose, knobs) == choose + ": type /reward orm http://h:1 MODEL"


SENTENCES = ["Paris is big. ", "It is wrong. ", "It has museums. ", ""]


@pytest.mark.parametrize(
    ("steps", "stop"),
    [("paragraph", ("\n\n",)), ("line", ("\n",)), ("sentence", (". ", "? ", "! ", "\n"))],
)
async def test_steps_set_where_a_step_ends(steps: str, stop: tuple[str, ...]) -> None:
    chat = await open_chat(kind="outcome", default_delta=0.0, bounds=None)
    await chat.session.command(f"/steps {steps}")
    assert chat.session.policy is not None and chat.session.policy.stop == stop
    assert dict(chat.session.status().rows)["steps"] == steps
    assert chat.session.in_force().to_dict()["steps"] == steps


async def test_sentence_steps_judge_a_reply_without_blank_lines_sentence_by_sentence() -> None:
    chat = await open_chat(
        SENTENCES, ["-", "It is large. ", "", ""], lambda c, s: -1.0 if "wrong" in s.text else 1.0,
        kind="outcome", default_delta=0.0, bounds=None,
    )  # fmt: skip
    await chat.session.command("/steps sentence")
    assert [r["text"] for r in chat.records("change")] == ["steps paragraph → sentence"]
    trace = await chat.ask("Tell me about Paris")
    assert trace.text == "Paris is big. It is large. It has museums. "
    judged = [(s.index, s.author.value, s.accepted) for s in chat.steps() if s.decision is not None]
    assert judged == [(0, "draft", True), (1, "draft", False), (2, "draft", True)]
    await chat.session.command("/steps default")
    assert chat.session.policy is not None and chat.session.policy.stop == ("\n\n",)


async def test_one_long_step_in_a_chat_says_how_to_judge_it_finer() -> None:
    reply = ["Paris is big. " * 30]  # no blank line: one step, one decision
    chat = await open_chat(reply, reply, kind="outcome", default_delta=0.0, bounds=None)
    await chat.ask("Tell me about Paris")
    assert any("/steps sentence" in notice for notice in chat.notices()), chat.notices()
