"""The launcher for real: stand-in `vllm serve` processes on loopback, started, checked and stopped."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from vllm_processes import SMOLLM2, alive, engine_pids, wait_gone

from rsdchat.core.errors import BackendError, ConfigError
from rsdchat.core.types import Role
from rsdchat_vllm import launcher as launcher_module
from rsdchat_vllm import ports
from rsdchat_vllm.config import VllmConfig, check_shares
from rsdchat_vllm.launcher import Launcher


def launcher(standin: str, lines: list[str] | None = None, **settings: Any) -> Launcher:
    return Launcher(
        VllmConfig(vllm_command=standin, **settings), say=(lines if lines is not None else []).append
    )


def test_servers_start_one_by_one_answer_and_stop_with_every_process(
    standin: str, state: Path, reaper: list[int]
) -> None:
    lines: list[str] = []
    fleet = launcher(
        standin,
        lines,
        device="gpu",
        draft_gpus="3",
        target_tensor_parallel_size=2,
        vllm_args="--dtype half",
        target_vllm_args="--enforce-eager",
    )
    try:
        draft = fleet.start(Role.DRAFT, SMOLLM2)
        reaper.append(draft.pid)
        target = fleet.start(Role.TARGET, SMOLLM2)
        reaper.append(target.pid)
        assert fleet.start(Role.DRAFT, SMOLLM2) is draft  # a running server is reused
        assert draft.port != target.port
        for server in (draft, target):
            served = httpx.get(f"{server.url}/v1/models", timeout=5).json()
            assert [card["id"] for card in served["data"]] == [SMOLLM2]
            assert str(server.log_path).startswith(str(state / "vllm"))
        argv = draft.log_path.read_text().splitlines()[0]
        assert f"serve {SMOLLM2} --host 127.0.0.1 --port {draft.port} --served-model-name {SMOLLM2}" in argv
        assert "--max-model-len 4096 --gpu-memory-utilization 0.15 --dtype half" in argv
        assert "CUDA_VISIBLE_DEVICES=3" in draft.log_path.read_text()
        target_log = target.log_path.read_text()
        assert "--tensor-parallel-size 2" in target_log and "--enforce-eager" in target_log
        assert "CUDA_VISIBLE_DEVICES=unset" in target_log
        said = "\n".join(lines)
        assert f"starting the draft server ({SMOLLM2}, pid {draft.pid}) · log {draft.log_path}" in said
        assert said.index("draft server ready") < said.index("starting the target server")  # one by one
        engines = engine_pids(draft.log_path) + engine_pids(target.log_path)
        assert len(engines) == 2 and all(alive(pid) for pid in engines)
    finally:
        fleet.close()
    assert wait_gone([draft.pid, target.pid, *engines], timeout=1) == []  # close() waited for them
    with pytest.raises(BackendError, match="rsdchat is stopping"):
        fleet.start(Role.DRAFT, SMOLLM2)


def test_two_launchers_at_once_never_share_a_port(standin: str, state: Path, reaper: list[int]) -> None:
    fleets = [launcher(standin), launcher(standin)]
    found: dict[int, Any] = {}

    def start(i: int) -> None:
        found[i] = fleets[i].start(Role.TARGET, SMOLLM2)
        reaper.append(found[i].pid)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert sorted(found) == [0, 1]
        assert found[0].port != found[1].port
        for server in found.values():  # each answers on its own port
            assert httpx.get(f"{server.url}/v1/models", timeout=5).status_code == 200
    finally:
        for fleet in fleets:
            fleet.close()


def test_a_port_taken_by_another_rsdchat_is_skipped(state: Path) -> None:
    first = ports.lease_port(state / "ports")
    try:
        with pytest.raises(ConfigError, match=f"port {first.port} is in use by another rsdchat"):
            ports.lease_port(state / "ports", first.port, what="draft server")
        other = ports.lease_port(state / "ports")
        assert other.port != first.port
        other.release()
    finally:
        first.release()
    again = ports.lease_port(state / "ports", first.port)  # free once released
    again.release()


def test_a_port_lock_held_by_another_process_is_respected(state: Path) -> None:
    holder = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from rsdchat_vllm.ports import lease_port
        lease = lease_port(Path({str(state / "ports")!r}))
        print(lease.port, flush=True)
        sys.stdin.readline()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            port = int(process.stdout.readline())
            with pytest.raises(ConfigError, match="another rsdchat"):
                ports.lease_port(state / "ports", port)
        finally:
            process.kill()
    ports.lease_port(state / "ports", port).release()  # the kernel dropped the dead holder's lock


def test_a_configured_port_another_program_listens_on_is_one_line(standin: str, state: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError) as caught:
            launcher(standin, draft_port=port).start(Role.DRAFT, SMOLLM2)
    assert str(caught.value) == (
        f"the draft server's port {port} is in use by another program; pick another (0: any free one)"
    )


def test_a_port_lost_before_the_server_binds_it_is_retried_elsewhere(
    standin: str, state: Path, reaper: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What no lock prevents: another program binds the port between the check and the server."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        picks = iter([taken])
        monkeypatch.setattr(ports, "_kernel_port", lambda: next(picks, 0) or _free_port())
        monkeypatch.setattr(ports, "bindable", lambda port: True)  # the check passed, then the port went
        lines: list[str] = []
        fleet = launcher(standin, lines)
        try:
            server = fleet.start(Role.DRAFT, SMOLLM2)
            reaper.append(server.pid)
            assert server.port != taken
            assert sum("starting the draft server" in line for line in lines) == 2
        finally:
            fleet.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_missing_vllm_says_how_to_install_it(state: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Launcher(VllmConfig(vllm_command="/nonexistent/bin/vllm"))
    assert "vLLM not found: '/nonexistent/bin/vllm' is not an executable file" in str(caught.value)
    assert "pip install vllm" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="'no-such-vllm-here' is not on PATH"):
        Launcher(VllmConfig(vllm_command="no-such-vllm-here serve"))


def test_a_server_that_is_not_ready_in_time_is_stopped(standin: str, state: Path) -> None:
    fleet = launcher(standin, startup_timeout=1.5, draft_vllm_args="--standin-start-delay 60")
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        fleet.start(Role.DRAFT, SMOLLM2)
    message = str(caught.value)
    assert message.startswith("the draft vLLM server was not ready after 1.5 s (startup_timeout): ")
    assert "stand-in vllm: serve" in message and " — log: " in message
    assert time.monotonic() - started < 30
    assert fleet.servers == []


def test_close_from_another_thread_stops_a_server_that_is_starting(standin: str, state: Path) -> None:
    fleet = launcher(standin, draft_vllm_args="--standin-start-delay 60")
    failed: list[BaseException] = []

    def start() -> None:
        try:
            fleet.start(Role.DRAFT, SMOLLM2)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    deadline = time.monotonic() + 30
    while not fleet.servers and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = fleet.servers[0].pid
    fleet.close()  # what Runtime.aclose does on Ctrl-C while models load
    thread.join(timeout=30)
    assert wait_gone([pid], timeout=1) == []
    assert len(failed) == 1 and "stopped while the draft server was starting" in str(failed[0])


def test_servers_are_stopped_when_the_program_exits_without_closing(standin: str, state: Path) -> None:
    """The safety net: no close() call (an exception, a forgotten path), yet nothing survives the exit."""
    script = textwrap.dedent(
        f"""
        from rsdchat.core.types import Role
        from rsdchat_vllm.config import VllmConfig
        from rsdchat_vllm.launcher import Launcher
        fleet = Launcher(VllmConfig(vllm_command={standin!r}), say=print)
        server = fleet.start(Role.DRAFT, {SMOLLM2!r})
        print("pid", server.pid, flush=True)
        raise SystemExit(4)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 4, done.stderr
    pid = int(re.findall(r"^pid (\d+)$", done.stdout, re.MULTILINE)[0])
    assert wait_gone([pid], timeout=5) == []


def test_shares_of_servers_on_one_gpu_must_stay_under_one() -> None:
    config = VllmConfig(draft_gpu_share=0.5, target_gpu_share=0.6)
    with pytest.raises(ConfigError) as caught:
        check_shares(config, [Role.DRAFT], Role.TARGET)
    assert str(caught.value).startswith("draft_gpu_share 0.5 + target_gpu_share 0.6 = 1.1: ")
    check_shares(config, [], Role.TARGET)  # alone, it fits
    check_shares(config.model_copy(update={"draft_gpus": "0", "target_gpus": "1"}), [Role.DRAFT], Role.TARGET)
    check_shares(config.model_copy(update={"sleep_mode": True}), [Role.DRAFT], Role.TARGET)  # turns
    with pytest.raises(ConfigError):  # "0,1" and "1" share GPU 1
        check_shares(
            config.model_copy(update={"draft_gpus": "0,1", "target_gpus": "1"}), [Role.DRAFT], Role.TARGET
        )
    check_shares(VllmConfig(), [Role.DRAFT, Role.TARGET], Role.REWARD)  # the defaults fit: 0.9


def test_settings_are_checked_where_they_are_given() -> None:
    with pytest.raises(ValueError, match="GPU numbers"):
        VllmConfig(draft_gpus="cuda:0")
    with pytest.raises(ValueError, match="--port is set by rsdchat"):
        VllmConfig(target_vllm_args="--port 9000")
    with pytest.raises(ValueError, match="cannot split"):
        VllmConfig(vllm_args="--chat-template 'unterminated")
    assert VllmConfig(reward_gpus=" 0, 1").reward_gpus == "0,1"


def test_the_command_line_of_each_role() -> None:
    config = VllmConfig(
        device="gpu", sleep_mode=True, reward_vllm_args="--trust-remote-code", max_model_len=8192
    )
    argv = config.argv(["vllm"], Role.REWARD, "Qwen/Qwen2.5-Math-PRM-7B", 8003)
    assert argv == [
        "vllm", "serve", "Qwen/Qwen2.5-Math-PRM-7B", "--host", "127.0.0.1", "--port", "8003",
        "--served-model-name", "Qwen/Qwen2.5-Math-PRM-7B", "--max-model-len", "8192",
        "--gpu-memory-utilization", "0.3", "--runner", "pooling", "--enable-sleep-mode",
        "--trust-remote-code",
    ]  # fmt: skip
    env = config.env(Role.REWARD, {"PATH": "/bin"})
    assert env["VLLM_SERVER_DEV_MODE"] == "1" and "CUDA_VISIBLE_DEVICES" not in env
    old = VllmConfig(device="gpu", pooling_runner="--task reward").argv(["vllm"], Role.REWARD, "m", 1)
    assert old[-2:] == ["--task", "reward"]


def test_logs_are_kept_to_the_newest(state: Path, monkeypatch: pytest.MonkeyPatch, standin: str) -> None:
    monkeypatch.setattr(launcher_module, "KEEP_LOGS", 3)
    folder = state / "vllm"
    folder.mkdir(parents=True)
    for i in range(5):
        (folder / f"{'draft' if i % 2 else 'target'}-20260101-00000{i}-1.log").write_text("old")
    fleet = launcher(standin)
    path = fleet._log_path(Role.REWARD, 9)
    kept = sorted(p.name for p in folder.glob("*.log"))
    assert kept == ["draft-20260101-000003-1.log", "target-20260101-000004-1.log"]
    assert path.parent == folder
