"""`rsdchat … --backend vllm` end to end, with the stand-in engine: two (or three) launched servers,
a real answer, crashes, Ctrl-C and SIGTERM, and after each the proof that no process is left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from vllm_processes import SMOLLM2, STARTED, Streaming, engine_pids, wait_gone

RSDCHAT = [sys.executable, "-c", "from rsdchat.cli import main; main()"]
GSM8K = (  # GSM8K test, problem 0
    "Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
    "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 "
    "per fresh duck egg. How much in dollars does she make every day at the farmers' market?"
)


def flags(standin: str, *more: str) -> list[str]:
    """Two stand-in servers of the test model; a cheap reward and no draft log-probabilities (slow here)."""
    return [
        "--backend", "vllm", "--vllm-command", standin, "--draft", SMOLLM2, "--target", SMOLLM2,
        "--reward", "arithmetic", "--no-draft-logprobs", "--max-step-tokens", "48", *more,
    ]  # fmt: skip


def servers(stderr: str) -> dict[str, tuple[int, Path]]:
    """role -> (pid, log) from the 'vllm: starting the … server' lines."""
    return {role: (int(pid), Path(log)) for role, pid, log in STARTED.findall(stderr)}


def assert_nothing_left(started: dict[str, tuple[int, Path]]) -> None:
    """No server, no process of its group, no engine process it ran: all gone."""
    pids = [pid for pid, _ in started.values()]
    engines = [pid for _, log in started.values() for pid in engine_pids(log)]
    assert engines, "the stand-ins said which engine processes they ran"
    assert wait_gone([*pids, *engines], timeout=2) == []


def test_solve_answers_with_draft_and_target_on_two_launched_servers(
    standin: str, state: Path, reaper: list[int]
) -> None:
    done = subprocess.run(
        [*RSDCHAT, "solve", *flags(standin, "--max-tokens", "120"), GSM8K],
        capture_output=True,
        text=True,
        timeout=300,
    )
    started = servers(done.stderr)
    reaper += [pid for pid, _ in started.values()]
    assert done.returncode == 0, done.stderr
    assert sorted(started) == ["draft", "target"] and started["draft"][0] != started["target"][0]
    for role, (_, log) in started.items():
        assert log.is_file() and log.parent == state / "vllm"
        assert f"vllm: {role} server ready at http://127.0.0.1:" in done.stderr
    assert "draft  │" in done.stderr and "answer:" in done.stderr
    assert done.stdout.strip()  # the reply
    assert_nothing_left(started)


def test_a_server_that_dies_mid_answer_ends_it_with_one_line(
    standin: str, state: Path, reaper: list[int]
) -> None:
    dies = ["--draft-vllm-args", "--standin-die-after 1"]  # the draft's second step never comes
    done = subprocess.run(
        [*RSDCHAT, "solve", *flags(standin, "--max-tokens", "300", *dies), GSM8K],
        capture_output=True,
        text=True,
        timeout=300,
    )
    started = servers(done.stderr)
    reaper += [pid for pid, _ in started.values()]
    assert done.returncode == 1, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("q1: ")]
    log = started["draft"][1]
    assert said == [
        f"q1: the draft vLLM server stopped (exit status 3): stand-in vllm: dying on completion request 2, "
        f"as asked — log: {log}"
    ]
    assert_nothing_left(started)


def test_a_server_killed_with_sigkill_mid_answer_is_named_as_such(
    standin: str, state: Path, reaper: list[int]
) -> None:
    """Issue 23, row 17: the guard died of EINVAL resetting SIGKILL's handler ("exit status 1: OSError")."""
    dies = ["--draft-vllm-args", "--standin-die-after 1 --standin-die-by KILL"]
    done = subprocess.run(
        [*RSDCHAT, "solve", *flags(standin, "--max-tokens", "300", *dies), GSM8K],
        capture_output=True,
        text=True,
        timeout=300,
    )
    started = servers(done.stderr)
    reaper += [pid for pid, _ in started.values()]
    assert done.returncode == 1, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("q1: ")]
    log = started["draft"][1]
    assert said == [
        f"q1: the draft vLLM server stopped (killed by SIGKILL): stand-in vllm: dying on completion "
        f"request 2, as asked — log: {log}"
    ]
    assert "Traceback" not in log.read_text()
    assert_nothing_left(started)


def test_a_question_too_long_for_the_context_says_so_and_leaves_the_server_up(
    standin: str, state: Path, reaper: list[int]
) -> None:
    """Issue 23, row 20: a full context is the conversation's fault, not the server's: no log, no restart."""
    done = subprocess.run(
        [*RSDCHAT, "solve", *flags(standin, "--max-model-len", "256"), "word " * 400],
        capture_output=True,
        text=True,
        timeout=300,
    )
    started = servers(done.stderr)
    reaper += [pid for pid, _ in started.values()]
    assert done.returncode == 1, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("q1: ")]
    assert said == [
        "q1: the conversation fills the draft's context (256 tokens): start a new chat or raise max_model_len"
    ]
    assert "starting it again" not in done.stderr
    assert_nothing_left(started)


def test_a_server_that_died_is_started_again_for_the_next_question(
    standin: str, state: Path, reaper: list[int], tmp_path: Path
) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question": GSM8K}) + "\n" for _ in range(2)))
    once = tmp_path / "died"
    dies = ["--draft-vllm-args", f"--standin-die-after 1 --standin-die-once {once}"]
    done = subprocess.run(
        [*RSDCHAT, "solve", *flags(standin, "--max-tokens", "100", *dies), "-f", str(questions), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    started = servers(done.stderr)
    reaper += [pid for pid, _ in started.values()]
    assert done.returncode == 1, done.stderr  # one question failed
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    assert first["error"].startswith("the draft vLLM server stopped (exit status 3)")
    assert second["error"] is None and second["steps"]  # on the draft's new server
    restarted = [line for line in done.stderr.splitlines() if "starting it again" in line]
    assert len(restarted) == 1 and restarted[0].endswith("starting it again (1 of 2 restarts)")
    assert len(STARTED.findall(done.stderr)) == 3  # draft, target, the draft again
    assert_nothing_left(started)


@pytest.mark.parametrize("how", ["ctrl-c", "kill -TERM", "kill -9"])
def test_stopping_rsdchat_mid_answer_stops_every_server(
    how: str, standin: str, state: Path, reaper: list[int]
) -> None:
    run = Streaming([*RSDCHAT, "solve", *flags(standin, "--max-tokens", "1000"), GSM8K])
    try:
        assert run.wait(180), run.text
        started = servers(run.text)
        reaper += [pid for pid, _ in started.values()]
        if how == "ctrl-c":
            # what the terminal does: rsdchat's group, not the servers'
            os.killpg(run.process.pid, signal.SIGINT)
        elif how == "kill -TERM":
            run.process.send_signal(signal.SIGTERM)
        else:  # no handler of rsdchat's runs: the servers' guards see their lifeline close
            run.process.kill()
        assert run.process.wait(60) == (-signal.SIGKILL if how == "kill -9" else 130)
    finally:
        run.finish()
    assert how == "kill -9" or "interrupted" in run.text
    assert "answer:" not in run.text  # it was stopped mid-answer
    assert_nothing_left(started)


def test_a_server_that_cannot_start_stops_the_others(standin: str, state: Path, reaper: list[int]) -> None:
    cli = [*RSDCHAT, "solve", *flags(standin), "--target", "no-such/model", "What is 2 + 3?"]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    started = servers(done.stderr)
    reaper += [pid for pid, _ in started.values()]
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    log = started["target"][1]
    assert re.fullmatch(
        r"rsdchat: the target vLLM server did not start \(exit status 1\): # rsdchat target server: .* \| "
        r"stand-in vllm: serve no-such/model .* \| OSError: no-such/model is not a local file nor a model "
        rf"this stand-in knows — log: {re.escape(str(log))}",
        last,
    ), last
    assert_nothing_left({"draft": started["draft"]})  # the draft was up, and is stopped


def test_no_vllm_is_one_line_and_exit_2(state: Path) -> None:
    done = subprocess.run(
        [*RSDCHAT, "solve", "--backend", "vllm", "--vllm-command", "/nonexistent/vllm", "What is 2 + 3?"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "rsdchat: vLLM not found: '/nonexistent/vllm' is not an executable file; install vLLM (with a GPU: "
        "pip install vllm; on a CPU: its CPU build, see docs/backends.md 'vLLM on the CPU'), or set "
        "vllm_command to it (--vllm-command)"
    ]


def test_serve_models_keeps_servers_up_for_other_commands_until_ctrl_c(
    standin: str, state: Path, reaper: list[int]
) -> None:
    serve = subprocess.Popen(
        [*RSDCHAT, "serve-models", *flags(standin)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    printed: list[str] = []
    try:
        assert serve.stdout is not None
        for line in serve.stdout:
            printed.append(line)
            if line.startswith("target_url = "):
                break
        text = "".join(printed)
        command = next(line for line in printed if line.startswith("rsdchat solve --backend openai"))
        assert f"--draft {SMOLLM2} --draft-url http://127.0.0.1:" in command
        assert 'backend = "openai"' in text and "[backends.openai]" in text
        urls = re.findall(r"--(draft|target)-url (\S+)", command)
        use = [*RSDCHAT, "solve", "--backend", "openai", "--draft", SMOLLM2, "--target", SMOLLM2]
        use += [arg for role, url in urls for arg in (f"--{role}-url", url)]
        use += ["--reward", "arithmetic", "--no-draft-logprobs", "--max-tokens", "40", "What is 2 + 3?"]
        answered = subprocess.run(use, capture_output=True, text=True, timeout=300)
        assert answered.returncode == 0, answered.stderr
        assert "vllm: starting" not in answered.stderr  # it used the running servers
        os.killpg(serve.pid, signal.SIGINT)
        assert serve.wait(60) == 130
    finally:
        if serve.poll() is None:
            serve.kill()
        _, err = serve.communicate()
    started = servers(err)
    reaper += [pid for pid, _ in started.values()]
    assert sorted(started) == ["draft", "target"]
    assert_nothing_left(started)


def test_doctor_reports_vllm_and_each_launched_server(standin: str, state: Path, reaper: list[int]) -> None:
    done = subprocess.run(
        [*RSDCHAT, "doctor", "--json", *flags(standin), "--reward", "vllm-orm", "--reward-model", SMOLLM2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    started = servers(done.stderr)
    reaper += [pid for pid, _ in started.values()]
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["ok"], done.stdout + done.stderr
    roles = {row["role"]: row for row in report["roles"]}
    assert sorted(roles) == ["draft", "reward", "target"] and sorted(started) == ["draft", "reward", "target"]
    for role in ("draft", "target"):
        row = roles[role]
        assert row["backend"] == "vllm" and row["reachable"] and row["model_served"] and row["streaming"]
        assert "vllm 0.0.0+standin found" in row["notes"]
        assert any(note.startswith(f"pid {started[role][0]} · log ") for note in row["notes"])
    assert roles["reward"]["reward_api"] and roles["reward"]["backend"] == "vllm"
    assert "--runner pooling" in started["reward"][1].read_text().splitlines()[0]
    assert_nothing_left(started)


def test_sleep_mode_lets_the_servers_take_turns(standin: str, state: Path, reaper: list[int]) -> None:
    every_step_to_the_target = ["--weighting", "constant", "--p", "0"]  # ω = 0: draft, target, draft, …
    settings = flags(standin, "--sleep-mode", "--max-tokens", "60", *every_step_to_the_target)
    done = subprocess.run(
        [*RSDCHAT, "solve", *settings, GSM8K],
        capture_output=True,
        text=True,
        timeout=300,
    )
    started = servers(done.stderr)
    reaper += [pid for pid, _ in started.values()]
    assert done.returncode == 0, done.stderr
    for _, log in started.values():
        text = log.read_text()
        assert "--enable-sleep-mode" in text.splitlines()[0]
        assert (
            text.count("stand-in vllm: sleep") >= 1
        )  # asleep once ready: the next one starts in free memory
    woken = sum(log.read_text().count("stand-in vllm: wake_up") for _, log in started.values())
    assert woken >= 2, done.stderr  # the draft, then the target
    assert_nothing_left(started)


async def test_the_chat_app_shows_the_servers_starting_and_stops_them_on_quit(
    standin: str, state: Path, reaper: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rsdchat.settings import load_settings
    from rsdchat.tui import RsdChatApp

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # where the chat is saved
    settings = load_settings(
        None, backend="vllm", vllm_command=standin, draft=SMOLLM2, target=SMOLLM2, reward="arithmetic",
        draft_logprobs=False,
    )  # fmt: skip
    app = RsdChatApp(settings)
    async with app.run_test(size=(250, 50)) as pilot:  # wide: a log's path fits on one line
        deadline = time.monotonic() + 180
        while not app.session.ready:
            assert app.session.load_error is None, app.session.load_error
            assert time.monotonic() < deadline, "the servers did not start"
            await pilot.pause(0.1)
        await pilot.pause()
        text = "\n".join(strip.text for strip in app.screen._compositor.render_strips())
        started = servers(text)  # the launcher's lines, as the conversation shows them
        reaper += [pid for pid, _ in started.values()]
        assert set(started) == {"draft", "target"}, text
        assert "vllm: draft server ready at http://127.0.0.1:" in text
    assert_nothing_left(started)  # leaving the app stops every server
