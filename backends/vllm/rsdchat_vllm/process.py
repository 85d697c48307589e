"""One launched `vllm serve` process: its role, model, address, log, and how it ended."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from rsdchat.plugin_api import BackendError, Role, RsdchatError
from rsdchat_vllm.config import HOST
from rsdchat_vllm.ports import PortLease


@dataclass(eq=False)
class Server:
    """One running `vllm serve`: its role, model, address, process and log."""

    role: Role
    model: str  # as given to `vllm serve`, and its served name
    lease: PortLease
    process: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str]
    started: float = field(default_factory=time.monotonic)
    asleep: bool = False  # sleep mode: put to sleep, not woken since

    @property
    def port(self) -> int:
        return self.lease.port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def exited(self, wait: float = 0.0) -> int | None:
        """Its exit status, waiting up to `wait` seconds for it; None while it runs."""
        try:
            return self.process.wait(wait) if wait else self.process.poll()
        except subprocess.TimeoutExpired:
            return None

    def failure(self, error: RsdchatError) -> BackendError:
        """A request failed: one line naming the role, saying whether the server died, and its log."""
        if self.exited(wait=1.0) is None:  # a dropped connection comes a moment before the exit
            return BackendError(f"{error} — {self.role.value} server log: {self.log_path}")
        return self.died()

    def died(self) -> BackendError:
        """The server has exited: one line with the role, how it ended, its last log line, the log."""
        status = self.exited()
        how = describe_exit(status) if status is not None else "not answering"
        last = log_tail(self.log_path, 1)
        said = f": {last}" if last else ""
        return BackendError(f"the {self.role.value} vLLM server stopped ({how}){said} — log: {self.log_path}")


def describe_exit(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


def log_tail(path: Path, lines: int = 3, width: int = 200) -> str:
    """The last non-blank lines of a log, joined by ' | ' (each cut to `width`)."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 65536))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # colours
    kept = [" ".join(line.split()) for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(line if len(line) <= width else line[: width - 1] + "…" for line in kept)
