"""What the vLLM tests read of the processes they start: the launcher's "starting" lines, the stand-in's
engine processes, and whether a process is gone (a module of its own, so that test modules import it
by a name no other folder's tests use)."""

from __future__ import annotations

import re
import time
from pathlib import Path

from rsdchat_vllm.launcher import group_members

__all__ = ["ENGINE", "SMOLLM2", "STARTED", "alive", "engine_pids", "wait_gone"]

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
