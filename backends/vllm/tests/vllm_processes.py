"""What the vLLM tests read of the processes they start: the launcher's "starting" lines, the stand-in's
engine processes, and whether a process is gone (a module of its own, so that test modules import it
by a name no other folder's tests use)."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

from rsdchat_vllm.launcher import group_members

__all__ = ["ENGINE", "SMOLLM2", "STARTED", "Streaming", "alive", "engine_pids", "wait_gone"]

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the stand-in serves the test model under this name
STARTED = re.compile(r"vllm: starting the (\w+) server \(.*, pid (\d+)\) · log (\S+)")
ENGINE = re.compile(r"engine core pid (\d+)")


def alive(pid: int) -> bool:
    """A process that runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_gone(pids: list[int], timeout: float = 20.0) -> list[int]:
    """The pids (or process groups) still alive after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in pids if alive(pid) or group_members(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def engine_pids(log: Path) -> list[int]:
    return [int(pid) for pid in ENGINE.findall(log.read_text(errors="replace"))]


class Streaming:
    """An rsdchat command in a session of its own (^C to its group spares the servers), its stderr
    read as it comes; `wait()` returns once a draft step is being shown."""

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        self.lines: list[str] = []
        self._streaming = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if "draft  │" in line:
                self._streaming.set()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait(self, timeout: float) -> bool:
        return self._streaming.wait(timeout)

    def finish(self) -> None:
        """Kill what still runs and read what is left."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()
        self._reader.join(10)
