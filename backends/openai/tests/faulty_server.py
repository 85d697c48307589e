"""An OpenAI-compatible server on loopback that fails on purpose, for the fault tests.

    with FaultyServer("nan") as server:   # server.url, server.requests
        ...

Modes: "ok" (streams a short step with log-probabilities), "hang" (says nothing until its
client leaves, for at most HANG seconds), "nan" / "huge" (log-probabilities NaN / 1000),
"html" (a 502 proxy page), "echo-auth" (a 400 whose body repeats the Authorization header),
"retry-after" (429 with Retry-After: 1 the first time, then "ok"), "error" (a 400 with a
message), "models-hang" (/v1/models hangs). Every wait is bounded; the server stops on exit.

What hanging requests saw: `hung` is set once one hangs, `most_hanging` is the most left
unanswered at the same time (their clients still waiting), and `gave_up` counts the hangs
that ran out their HANG seconds (a client that waited all that time).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

HANG = 20.0  # seconds a hanging request waits at most
STEP = ["2 + 2", " = 4", ".\n\n"]


class FaultyServer:
    def __init__(self, mode: str = "ok", model: str = "m") -> None:
        self.mode, self.model = mode, model
        self.requests: list[tuple[float, str, dict[str, Any]]] = []  # (time, path, body)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.hung = threading.Event()  # a request is being left unanswered
        self.hanging = 0  # requests unanswered now (their client still waiting)
        self.most_hanging = 0  # the most at the same time
        self.gave_up = 0  # hangs that ran out their HANG seconds
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                owner.requests.append((time.monotonic(), self.path, {}))
                if self.path.startswith("/v1/models"):
                    if owner.mode == "models-hang":
                        self._hang()
                        return
                    self._json(200, {"object": "list", "data": [{"id": owner.model, "owned_by": "test"}]})
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                owner.requests.append((time.monotonic(), self.path, body))
                mode = owner.mode
                if mode == "retry-after" and sum(p == self.path for _, p, _ in owner.requests) == 1:
                    self.send_response(429)
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "slow down"}}')
                    return
                if mode == "hang":
                    self._hang()
                    return
                if mode == "html":
                    page = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head></html>"
                    self.send_response(502)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                if mode == "echo-auth":
                    self._json(
                        400, {"error": {"message": f"bad request with {self.headers.get('Authorization')}"}}
                    )
                    return
                if mode == "error":
                    self._json(
                        400, {"error": {"message": "this model's maximum context length is 512 tokens"}}
                    )
                    return
                self._stream(mode)

            def _hang(self) -> None:
                """Say nothing until the client goes away, the server stops or HANG seconds pass."""
                with owner._lock:
                    owner.hanging += 1
                    owner.most_hanging = max(owner.most_hanging, owner.hanging)
                owner.hung.set()
                deadline = time.monotonic() + HANG
                try:
                    while not owner._stop.wait(0.02) and not self._client_left():
                        if time.monotonic() > deadline:
                            owner.gave_up += 1
                            return
                finally:
                    with owner._lock:
                        owner.hanging -= 1

            def _client_left(self) -> bool:
                try:
                    waiting: bytes = self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                    return not waiting  # b"": the client closed the connection
                except BlockingIOError:
                    return False  # connected, nothing more sent
                except OSError:
                    return True

            def _stream(self, mode: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                value = {"nan": float("nan"), "huge": 1000.0}.get(mode, -0.1)
                for piece in STEP:
                    logprobs = {"token_logprobs": [value], "tokens": [piece]}
                    chunk = {
                        "choices": [{"text": piece, "index": 0, "finish_reason": None, "logprobs": logprobs}]
                    }
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                done = {"choices": [{"text": "", "index": 0, "finish_reason": "stop"}]}
                self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
                self.wfile.flush()

            def _json(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
