"""Loopback load test of `rsdchat serve`: many streaming clients, and what the server costs per step.

    .venv/bin/python benchmarks/serve_load.py [--clients 64] [--max-running 8] [--max-tokens 48]
        [--max-steps 8] [--repeat 2] [--out /tmp/serve_load.json]

`rsdchat serve` runs as a subprocess on a free loopback port (the real CLI, uvicorn, SSE) with
SmolLM2-135M (embedded, llama.cpp) as both draft and target and the default reward. The same
GSM8K test questions (rsdchat's packaged data) are answered, greedily (temperature 0), two ways:

- server: `--clients` concurrent streaming clients (httpx), one question each, all sent at
  once; the server answers `--max-running` at a time and queues the rest;
- direct: `Engine.solve` on a runtime opened in this process with the same settings and seed,
  `--max-running` at a time (asyncio.gather under a semaphore), no HTTP.

Both share the machine's cores with the model compute, so they run one after the other in
ABBA order (direct, server, server, direct, … for `--repeat` rounds) and each pass is printed.
Per request: time to the first content token (TTFT; queueing included, as a client sees it),
total time, steps (rejected drafts included), answer tokens, and whether it ended properly
(server: `[DONE]` after a finish_reason, no error event). The server's overhead is its wall
time per step against the direct one's. Greedy decoding writes the same steps both ways, which
is checked step by step (author, accepted, text). Raw per-request numbers go to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rsdchat.core.events import Event, StepDone
from rsdchat.core.types import Message
from rsdchat.evaluation.data import load_problems
from rsdchat.in_force import in_force
from rsdchat.runtime import Runtime, open_runtime
from rsdchat.settings import Settings, load_settings
from rsdchat.testing import free_port

StepKey = tuple[int, str, bool, str]  # index, author, accepted, text


@dataclass
class Record:
    """One request as its client saw it."""

    question: int  # the client's index
    ttft: float | None = None  # seconds to the first non-empty content (None: none came)
    seconds: float = 0.0
    steps: list[StepKey] = field(default_factory=list)
    tokens: int = 0  # the answer's tokens
    finish: str | None = None  # the finish_reason sent (server) or the trace's (direct)
    done: bool = False  # server: [DONE] seen; direct: the trace ended without error
    status: int | None = None  # HTTP status (server)
    error: str | None = None

    @property
    def completed(self) -> bool:
        return self.done and self.finish is not None and self.error is None


@dataclass
class Pass:
    path: str  # "direct" | "server"
    round: int
    wall: float
    records: list[Record]
    cpu: float = 0.0  # CPU seconds of this process and the server's during the pass

    @property
    def cpu_per_step(self) -> float:
        return self.cpu / max(self.steps, 1)

    @property
    def steps(self) -> int:
        return sum(len(r.steps) for r in self.records)

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.records)

    @property
    def per_step(self) -> float:
        return self.wall / max(self.steps, 1)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (nan for no values)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# -- direct: Engine.solve in this process --------------------------------------------------


async def direct_pass(
    runtime: Runtime, chats: list[list[Message]], concurrency: int, seed: int, rnd: int
) -> Pass:
    policy = runtime.policy()
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, messages: list[Message]) -> Record:
        record = Record(question=i)  # the client's index (questions repeat past --questions)
        started = time.perf_counter()

        def emit(event: Event) -> None:
            if not isinstance(event, StepDone):
                return
            step = event.step
            record.steps.append((step.index, step.author.value, step.accepted, step.text))
            if record.ttft is None and step.accepted and step.text:
                record.ttft = time.perf_counter() - started

        async with gate:
            trace = await runtime.engine.solve(
                messages, policy, request_id=f"d{rnd}-{i}", seed=seed, emit=emit
            )
        record.seconds = time.perf_counter() - started
        record.tokens = sum(step.tokens for step in trace.answer_steps)
        record.finish = trace.finish_reason
        record.done = trace.error is None
        record.error = trace.error
        return record

    started = time.perf_counter()
    records = await asyncio.gather(*(one(i, chat) for i, chat in enumerate(chats)))
    return Pass("direct", rnd, time.perf_counter() - started, list(records))


# -- server: streaming clients over loopback ----------------------------------------------


async def ask(client: httpx.AsyncClient, i: int, question: str, max_tokens: int, seed: int) -> Record:
    record = Record(question=i)
    body = {
        "model": "rsd",
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "seed": seed,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": question}],
    }
    started = time.perf_counter()
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            record.status = response.status_code
            if response.status_code != 200:
                record.error = (await response.aread()).decode(errors="replace")[:300]
                return record
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # a blank line or a ping comment
                data = line[5:].strip()
                if data == "[DONE]":
                    record.done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    record.error = str(chunk["error"].get("message"))
                if chunk.get("usage"):
                    record.tokens = int(chunk["usage"]["completion_tokens"])
                content = None
                for choice in chunk.get("choices") or []:
                    content = choice.get("delta", {}).get("content")
                    if content and record.ttft is None:
                        record.ttft = time.perf_counter() - started
                    if choice.get("finish_reason"):
                        record.finish = choice["finish_reason"]
                rsd = chunk.get("rsd")
                if rsd and "step" in rsd:
                    text = content if rsd["accepted"] else rsd.get("text")
                    record.steps.append((rsd["step"], rsd["author"], rsd["accepted"], text or ""))
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    finally:
        record.seconds = time.perf_counter() - started
    return record


async def server_pass(url: str, questions: list[str], max_tokens: int, seed: int, rnd: int) -> Pass:
    limits = httpx.Limits(max_connections=len(questions) + 8, max_keepalive_connections=len(questions) + 8)
    timeout = httpx.Timeout(900.0, connect=30.0)  # a queued request hears nothing until its slot opens
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        started = time.perf_counter()
        records = await asyncio.gather(
            *(ask(client, i, q, max_tokens, seed) for i, q in enumerate(questions))
        )
        wall = time.perf_counter() - started
    return Pass("server", rnd, wall, list(records))


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, every thread) of this process and of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    other = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return time.process_time() + other


@contextlib.contextmanager
def server(command: list[str], url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`rsdchat serve` running until /health answers; SIGTERM (drain) on the way out."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise SystemExit(f"rsdchat serve exited ({process.returncode}):\n{log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"rsdchat serve did not answer /health in 300 s:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- the report -----------------------------------------------------------------------------


def row(p: Pass) -> str:
    records = p.records
    completed = sum(r.completed for r in records)
    refused = sum(r.status == 429 for r in records)
    ttfts = [r.ttft for r in records if r.ttft is not None]
    cells = [
        str(p.round),
        p.path,
        str(len(records)),
        str(completed),
        str(len(records) - completed),
        str(refused) if p.path == "server" else "-",
        f"{percentile(ttfts, 50):.2f}",
        f"{percentile(ttfts, 99):.2f}",
        f"{p.wall:.1f}",
        f"{completed / p.wall:.2f}",
        f"{p.tokens / p.wall:.1f}",
        str(p.steps),
        f"{p.steps / p.wall:.2f}",
        f"{1000 * p.per_step:.0f}",
        f"{1000 * p.cpu_per_step:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| round | path | sent | completed | lost | 429 | TTFT p50 s | TTFT p99 s | wall s | req/s "
    "| answer tok/s | steps | steps/s | ms/step | CPU ms/step |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def same_steps(a: Pass, b: Pass) -> tuple[int, str | None]:
    """How many questions got identical steps in `a` and `b`, and the first difference."""
    same, first = 0, None
    for x, y in zip(a.records, b.records, strict=True):
        if x.steps == y.steps:
            same += 1
            continue
        if first is None:
            at = next(
                (k for k, (s, t) in enumerate(zip(x.steps, y.steps, strict=False)) if s != t),
                min(len(x.steps), len(y.steps)),
            )
            first = (
                f"question {x.question}: {len(x.steps)} vs {len(y.steps)} steps, first difference at step "
                f"{at}: {x.steps[at] if at < len(x.steps) else None!r} vs "
                f"{y.steps[at] if at < len(y.steps) else None!r}"
            )
    return same, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64, help="concurrent streaming clients")
    parser.add_argument("--max-running", type=int, default=8, help="the server's slots (and direct's)")
    parser.add_argument("--max-waiting", type=int, default=64, help="the server's queue")
    parser.add_argument("--questions", type=int, default=0, help="distinct questions (0: one per client)")
    parser.add_argument("--max-tokens", type=int, default=48, help="most tokens per answer")
    parser.add_argument("--max-steps", type=int, default=8, help="most steps per answer")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of (direct, server), in ABBA order")
    parser.add_argument("--model", default="smollm2-135m", help="draft and target")
    parser.add_argument("--reward", default=None, help="reward source (default: rsdchat's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=0, help="loopback port (0: a free one)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "serve_load.json")
    args = parser.parse_args()
    begun = time.perf_counter()

    distinct = args.questions or args.clients
    problems = load_problems("gsm8k", limit=distinct)
    questions = [problems[i % len(problems)].question for i in range(args.clients)]
    flags = {
        "draft": args.model,
        "target": args.model,
        "max_tokens": args.max_tokens,
        "max_steps": args.max_steps,
        "seed": args.seed,
        "reward": args.reward,
    }
    settings: Settings = load_settings(None, **flags)
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    rsdchat = Path(sys.executable).with_name("rsdchat")
    command = [str(rsdchat), "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += [
        "--max-running",
        str(args.max_running),
        "--max-waiting",
        str(args.max_waiting),
        "--grace",
        "5",
    ]
    for name, value in flags.items():
        if value is not None:
            command += [f"--{name.replace('_', '-')}", str(value)]

    passes: list[Pass] = []
    with tempfile.TemporaryDirectory() as tmp, server(command, url, Path(tmp) / "serve.log") as process:

        async def run_all() -> None:
            runtime = await open_runtime(settings)
            try:
                system = in_force(settings, runtime.reward).system
                chats = [
                    ([Message("system", system)] if system.strip() else []) + [Message("user", q)]
                    for q in questions
                ]
                # warm both up (not timed): one answer each
                await direct_pass(runtime, chats[:1], 1, args.seed, 0)
                await server_pass(url, questions[:1], args.max_tokens, args.seed, 0)
                for rnd in range(1, args.repeat + 1):
                    order = ("direct", "server") if rnd % 2 else ("server", "direct")
                    for path in order:
                        cpu = cpu_seconds(process.pid)
                        if path == "direct":
                            done = await direct_pass(runtime, chats, args.max_running, args.seed, rnd)
                        else:
                            done = await server_pass(url, questions, args.max_tokens, args.seed, rnd)
                        done.cpu = cpu_seconds(process.pid) - cpu
                        passes.append(done)
                        print(f"  round {rnd} {path}: {done.wall:.1f} s, {done.steps} steps", flush=True)
            finally:
                await runtime.aclose()

        asyncio.run(run_all())
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert process.poll() is None, "the server died during the run"

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print()
    print(
        f"{args.clients} streaming clients, {distinct} GSM8K test questions, `rsdchat serve` "
        f"--max-running {args.max_running} --max-waiting {args.max_waiting}; draft and target "
        f"{args.model} (llama.cpp), reward {settings.reward}, max {args.max_tokens} tokens / "
        f"{args.max_steps} steps, temperature 0"
    )
    print(f"{os.cpu_count()} CPUs, load average after the runs: {load}")
    print()
    print(HEADER)
    for p in passes:
        print(row(p))
    print()
    direct = {p.round: p for p in passes if p.path == "direct"}
    served = {p.round: p for p in passes if p.path == "server"}
    overheads = []
    for rnd in sorted(direct):
        d, s = direct[rnd], served[rnd]
        overhead = (s.per_step - d.per_step) / d.per_step
        cpu_overhead = (s.cpu_per_step - d.cpu_per_step) / d.cpu_per_step
        overheads.append({"wall": overhead, "cpu": cpu_overhead})
        same, first = same_steps(d, s)
        print(
            f"- round {rnd}: server overhead per step {overhead:+.1%} wall "
            f"({1000 * s.per_step:.1f} vs {1000 * d.per_step:.1f} ms/step), {cpu_overhead:+.1%} CPU; "
            f"identical steps server vs direct: {same}/{len(d.records)}" + (f" — {first}" if first else "")
        )
    total_d = sum(p.wall for p in direct.values()) / sum(p.steps for p in direct.values())
    total_s = sum(p.wall for p in served.values()) / sum(p.steps for p in served.values())
    cpu_d = sum(p.cpu for p in direct.values()) / sum(p.steps for p in direct.values())
    cpu_s = sum(p.cpu for p in served.values()) / sum(p.steps for p in served.values())
    print(
        f"- pooled over rounds: server overhead per step {(total_s - total_d) / total_d:+.1%} wall, "
        f"{(cpu_s - cpu_d) / cpu_d:+.1%} CPU (both processes' CPU time, robust to other load)"
    )
    for path, group in (("direct", direct), ("server", served)):
        if len(group) > 1:
            same, first = same_steps(group[1], group[2])
            print(
                f"- {path} round 1 vs round 2, identical steps: {same}/{len(group[1].records)}"
                + (f" — {first}" if first else "")
            )
    refused = [line for line in metrics.splitlines() if 'status="429"' in line or 'status="5' in line]
    if refused:
        print(f"- server /metrics, refusals and failures: {'; '.join(refused)}")
    elapsed = time.perf_counter() - begun
    print(f"- whole benchmark (model loads and warm-up included): {elapsed:.0f} s")
    print()
    reproduce = "python benchmarks/serve_load.py " + shlex.join(sys.argv[1:])
    print(f"    {reproduce.strip()}")
    print(f"    (server: {shlex.join(['rsdchat', *command[1:]])})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    raw: dict[str, Any] = {
        "command": reproduce.strip(),
        "server_command": command,
        "settings": settings.model_dump(mode="json"),
        "clients": args.clients,
        "max_running": args.max_running,
        "overhead_per_round": overheads,
        "seconds": elapsed,
        "passes": [
            {
                "path": p.path,
                "round": p.round,
                "wall": p.wall,
                "cpu": p.cpu,
                "records": [asdict(r) for r in p.records],
            }
            for p in passes
        ],
    }
    args.out.write_text(json.dumps(raw, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"    raw per-request numbers: {args.out}")


if __name__ == "__main__":
    main()
