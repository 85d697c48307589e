"""What the chat's tests share: scripted runtimes and a session that records its events
(`make_runtime`, `open_chat`, `Chat`), waiting for a condition (`wait_until`), and a vLLM-like
reward server on loopback (`OrmServer`). The fixtures are in conftest.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import pytest

from rsdchat.chat.events import ChatEvent, EngineUpdate, Notice
from rsdchat.chat.session import ChatSession
from rsdchat.core.engine import Engine
from rsdchat.core.events import StepDone, TokenText
from rsdchat.core.trace import Step, Trace
from rsdchat.core.types import Context, Generation, Role, StepRequest
from rsdchat.files import Record
from rsdchat.runtime import Runtime
from rsdchat.settings import Settings
from rsdchat.testing import ScriptedModel, ScriptedReward, installed

E = TypeVar("E")

DRAFT = ["Step one: 2+2=4.\n\n", "Step two is wrong.\n\n", "So the answer is \\boxed{4}.\n\n"]
TARGET = ["T one.\n\n", "Step two, done right.\n\n", "Thus \\boxed{4}.\n\n"]
SETTINGS = {"draft": "tiny-draft", "target": "tiny-target", "reward": "draft-confidence"}


def by_text(context: Context, step: Generation) -> float:
    return 0.2 if "wrong" in step.text else 0.9


class FakeBackend:
    """Hands out the scripted models when the session loads one the runtime was opened without."""

    def __init__(self, models: dict[Role, Any]) -> None:
        self.models = models
        self.closed = False

    def generator(self, role: Role, model: str) -> Any:
        found = self.models[role]
        if isinstance(found, Exception):
            raise found
        return found

    async def aclose(self) -> None:
        self.closed = True


class BlackBox:
    """A target that can write but not score text (like a plain HTTP endpoint): no logprobs()."""

    def __init__(self, script: Sequence[str] = TARGET) -> None:
        self.model = ScriptedModel(script, name="tiny-target")
        self.info = self.model.info

    async def generate(self, context: Context, request: StepRequest, on_token: Any = None) -> Generation:
        return await self.model.generate(context, request, on_token)


def make_runtime(
    draft: Sequence[str] | Any = DRAFT,
    target: Sequence[str] | Any = TARGET,
    reward: Callable[[Context, Generation], float] = by_text,
    *,
    kind: Literal["process", "outcome"] = "process",
    default_delta: float = 0.7,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    delay: float = 0.0,
    loaded: tuple[Role, ...] = (Role.DRAFT, Role.TARGET),
    **settings: Any,
) -> Runtime:
    """Scripted models behind the backend the settings name; `loaded` are in the engine already."""
    d = draft if not isinstance(draft, list) else ScriptedModel(draft, name="tiny-draft", delay=delay)
    t = target if not isinstance(target, list) else ScriptedModel(target, name="tiny-target", delay=delay)
    source = ScriptedReward(reward, kind=kind, default_delta=default_delta, bounds=bounds)
    chosen = Settings(**(SETTINGS | settings))
    engine = Engine(draft=d if Role.DRAFT in loaded else None, target=t if Role.TARGET in loaded else None)
    return Runtime(chosen, engine, {chosen.backend: FakeBackend({Role.DRAFT: d, Role.TARGET: t})}, source)


class Chat:
    """A session over a runtime, and every event it emitted."""

    def __init__(self, runtime: Runtime | None = None, settings: Settings | None = None) -> None:
        self.events: list[ChatEvent] = []
        chosen = runtime.settings if runtime is not None else settings
        assert chosen is not None
        self.session = ChatSession(chosen, runtime=runtime, listener=self.events.append)
        self.runtime = runtime

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    def records(self, kind: str) -> list[Record]:
        return [r for r in self.session.transcript.records if r["type"] == kind]

    def kinds(self) -> list[str]:
        return [r["type"] for r in self.session.transcript.records]

    def notices(self, severity: str | None = None) -> list[str]:
        return [
            f"{n.title}: {n.text}" if n.title else n.text
            for n in self.of(Notice)
            if severity is None or n.severity == severity
        ]

    def steps(self) -> list[Step]:
        """The steps as the listener got them (rejected drafts included)."""
        return [u.event.step for u in self.of(EngineUpdate) if isinstance(u.event, StepDone)]

    def tokens(self) -> str:
        return "".join(u.event.text for u in self.of(EngineUpdate) if isinstance(u.event, TokenText))

    async def ask(self, question: str) -> Trace:
        return await self.session.ask(question)

    def start(self, question: str) -> asyncio.Task[Trace]:
        """Ask in the background (to act while the answer is being written)."""
        return asyncio.ensure_future(self.session.ask(question))


async def open_chat(*args: Any, **kwargs: Any) -> Chat:
    chat = Chat(make_runtime(*args, **kwargs))
    await chat.session.open()
    return chat


async def closed_chat(question: str, answer: str = "So the answer is \\boxed{4}.") -> Path:
    """A saved chat with one question and this answer, closed again (no lock held)."""
    chat = await open_chat([answer + "\n\n"], [answer + "\n\n"])
    await chat.ask(question)
    path = chat.session.autosave.path
    await chat.session.aclose()
    assert path is not None
    return path


async def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait for `condition` to hold; the timeout only guards against a hang (a slow machine is fine)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def screen_text(app: Any) -> str:
    """What a Textual app's screen shows, line by line (trailing blanks cut)."""
    return "\n".join(strip.text.rstrip() for strip in app.screen._compositor.render_strips())


def shape(steps: Sequence[Step]) -> list[tuple[int, str, float | None, bool]]:
    return [(s.index, s.author.value, s.reward, s.accepted) for s in steps]


# -- a reward server -------------------------------------------------------------------

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
