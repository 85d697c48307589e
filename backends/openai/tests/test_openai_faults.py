"""Faults of model servers, as a user meets them through `rsdchat solve` and `rsdchat doctor`.

Each test runs the installed command against a loopback server that fails on purpose
(`faulty_server.FaultyServer`): no traceback, the right exit code, one clear line, no key
shown, and the answers that could be written kept.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from faulty_server import FaultyServer

RSDCHAT = [sys.executable, "-c", "from rsdchat.cli import main; main()"]
KEY = "sk-loopback-secret-0123456789abcdef"


def command(draft: str, target: str, *args: str) -> list[str]:
    return [
        *RSDCHAT, "solve", "What is 2+2?", "--backend", "openai", "--draft", "m", "--target", "m",
        "--draft-url", draft, "--target-url", target, "--reward", "draft-confidence", "--max-steps", "2",
        "--http-connect-timeout", "2", *args,
    ]  # fmt: skip


def run(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def strict(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr


@pytest.mark.parametrize("mode", ["nan", "huge"])
def test_a_log_probability_that_is_no_number_is_an_invalid_reward_and_strict_json(mode: str) -> None:
    with FaultyServer(mode) as bad, FaultyServer("ok") as good:
        result = run(command(bad.url, good.url, "--json"))
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    out = strict(result.stdout)  # no bare NaN or Infinity
    judged = [s["decision"] for s in out["steps"] if s["decision"] is not None]
    assert judged and all(d["invalid"] and d["reward"] is None and not d["accepted"] for d in judged)
    assert out["invalid_rewards"] == len(judged) and {s["author"] for s in out["steps"] if s["accepted"]} == {
        "target"
    }


def test_a_silent_server_at_start_up_is_reported_after_the_read_timeout_once() -> None:
    with FaultyServer("models-hang") as silent:
        result = run(command(silent.url, silent.url, "--http-read-timeout", "2"))
        asked = [path for _, path, _ in silent.requests]
    no_traceback(result)
    assert result.returncode == 1, result.stderr
    assert f"draft server {silent.url}: silent for 2 s" in result.stderr
    assert silent.gave_up == 0  # rsdchat stopped waiting (after 2 s), not the server (after HANG s)
    assert asked == ["/v1/models"], asked  # asked once: a server silent that long is not retried


def test_the_first_ctrl_c_ends_a_start_up_that_hangs() -> None:
    with FaultyServer("models-hang") as silent:
        proc = subprocess.Popen(
            command(silent.url, silent.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        asked(silent, proc)  # python is up, the request to the silent server is in flight
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert silent.gave_up == 0  # it ended while its request hung: not when the server gave up on it
    assert "Traceback" not in err and "interrupted" in err


def asked(server: FaultyServer, proc: subprocess.Popen[str], within: float = 60) -> None:
    """Wait until `proc` has sent its first request to `server` and waits for the answer
    (however slow the machine)."""
    deadline = time.monotonic() + within
    while not server.hung.wait(0.05):
        assert proc.poll() is None and time.monotonic() < deadline, "rsdchat never asked the server"


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell does for `rsdchat … &`


@pytest.mark.parametrize("background", [False, True])
def test_sigterm_stops_it_the_same_way(background: bool) -> None:
    with FaultyServer("models-hang") as silent:
        proc = subprocess.Popen(
            command(silent.url, silent.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_ignore_sigint if background else None,
        )
        asked(silent, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert silent.gave_up == 0  # it ended while its request hung: not when the server gave up on it


@pytest.mark.parametrize(
    ("mode", "shown"),
    [
        ("html", "HTTP 502: 502 Bad Gateway"),
        ("error", "the conversation fills the target's context (512 tokens): start a new chat"),  # row 20
    ],
)
def test_the_servers_own_message_is_shown_and_goes_to_stderr(mode: str, shown: str) -> None:
    with FaultyServer("ok") as good, FaultyServer(mode) as bad:
        result = run(command(good.url, bad.url, "--delta", "1"))  # every draft goes to the failing target
    no_traceback(result)
    assert result.returncode == 1
    assert shown in result.stderr and "interrupt_requests" not in result.stderr
    assert "error" not in result.stdout.lower()  # errors go to stderr; stdout keeps the answer so far


def test_a_key_echoed_by_a_server_is_never_printed() -> None:
    with FaultyServer("ok") as good, FaultyServer("echo-auth") as echo:
        args = command(good.url, echo.url, "--delta", "1", "--json", "--target-api-key-env", "LOOPBACK_KEY")
        result = run(args, env={"LOOPBACK_KEY": KEY})
    no_traceback(result)
    assert KEY not in result.stdout and KEY not in result.stderr
    assert "bad request with Bearer ***" in strict(result.stdout)["error"]


def test_a_key_given_where_a_variable_name_belongs_is_refused_without_echo() -> None:
    for subcommand in (["config"], ["doctor"]):
        result = run([*RSDCHAT, *subcommand, "--draft-api-key-env", KEY])
        no_traceback(result)
        assert result.returncode == 2 and KEY not in result.stderr + result.stdout
        assert "the name of the environment variable that holds the key" in result.stderr


def test_retry_after_is_honoured() -> None:
    with FaultyServer("ok") as good, FaultyServer("retry-after") as busy:
        result = run(command(good.url, busy.url, "--delta", "1", "--max-steps", "1", "--json"))
        posts = [t for t, path, _ in busy.requests if path == "/v1/completions"]
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert len(posts) == 2 and posts[1] - posts[0] >= 1.0  # waited as told (1 s), then once more


def test_doctor_checks_roles_together_with_a_short_timeout_and_what_solve_needs() -> None:
    with FaultyServer("models-hang") as silent:
        urls = ["--draft-url", silent.url, "--target-url", silent.url]
        args = [*RSDCHAT, "doctor", "--backend", "openai", *urls, "--http-read-timeout", "3", "--json"]
        result = run(args, timeout=60)
    no_traceback(result)
    report = strict(result.stdout)
    assert result.returncode == 1 and not report["ok"]
    assert silent.most_hanging >= 2  # both roles asked at once: not one after the other's timeout
    assert silent.gave_up == 0  # each gave up after its read timeout, not the server's HANG
    assert {r["role"] for r in report["roles"] if r["error"]} >= {"draft", "target"}
    with FaultyServer("ok") as good:  # this server cannot score text: likelihood-ratio cannot run
        urls = ["--draft-url", good.url, "--target-url", good.url, "--draft", "m", "--target", "m"]
        args = [*RSDCHAT, "doctor", "--backend", "openai", *urls, "--weighting", "likelihood-ratio", "--json"]
        report = strict(run(args).stdout)
    (policy,) = [r for r in report["roles"] if r["role"] == "policy"]
    assert "needs log-probabilities the target backend does not give" in policy["error"] and not report["ok"]


def test_finite_is_strict() -> None:
    from rsdchat.strict_json import dumps

    assert strict(dumps({"a": math.nan, "b": [math.inf, 1.0]})) == {"a": None, "b": [None, 1.0]}
