"""The chat never destroys what a user wrote (issue 23, rows 3, 4, 5, 11, 12 and 13).

- two chats on one file: the second is forked into a new file, never written over (row 3),
  shown with two real `rsdchat` apps in tmux;
- /save and /export write whole or not at all, and never over a file that is not their own (4, 5);
- SIGTERM and SIGHUP stop the answer, save it as stopped and give the terminal back (11);
- the chat app without a terminal says so at once (12);
- a damaged chat file is one line naming the file and field, wherever it is opened (13).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chat_helpers import Chat, make_runtime, open_chat, wait_until

from rsdchat.chat.history import chats_dir, continue_chat, saved_chats, scan_chats
from rsdchat.chat.transcript import Transcript, TranscriptError
from rsdchat.core.errors import ConfigError
from rsdchat.settings import Settings
from rsdchat.tui.app import RsdChatApp, run_chat

LONG = ["word " * 400 + "\n\n"]  # an answer that takes a while, to be stopped halfway


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def questions(path: Path) -> list[str]:
    return [r["content"] for r in lines(path) if r["type"] == "user"]


def history_files() -> list[Path]:
    return sorted(chats_dir().glob("*.jsonl"))


def capture_notes(app: RsdChatApp) -> list[str]:
    """What the app notifies from now on (title: message)."""
    said: list[str] = []
    notify = app.notify

    def recording(message: str, *, title: str = "", **kwargs: Any) -> None:
        said.append(f"{title}: {message}" if title else message)
        notify(message, title=title, **kwargs)

    app.notify = recording  # type: ignore[method-assign]
    return said


async def saved_chat(*questions: str) -> Path:
    """A chat with these questions in the history, closed again."""
    chat = await open_chat()
    for question in questions:
        await chat.ask(question)
    path = chat.session.autosave.path
    await chat.session.aclose()
    assert path is not None
    return path


# -- row 3: two chats on one file ------------------------------------------------------------------


async def test_two_sessions_on_one_chat_never_lose_a_turn() -> None:
    path = await saved_chat("First question?")
    one, two = Chat(make_runtime()), Chat(make_runtime())
    for chat in (one, two):
        await chat.session.open()
        await chat.session.load(path)  # `rsdchat -c` in two terminals
    assert one.session.autosave.path == path and not one.notices("warning")
    fork = two.session.autosave.path
    assert fork is not None and fork != path and fork.parent == path.parent
    (said,) = two.notices("warning")
    assert said == (
        "saved as a new chat: this chat is open in another rsdchat;"
        f" your turns here are saved as a new chat {fork}"
    )
    await one.ask("From one?")
    await two.ask("From two?")
    await one.ask("From one again?")
    assert questions(path) == ["First question?", "From one?", "From one again?"]
    assert questions(fork) == ["First question?", "From two?"]
    await one.session.aclose()
    await two.session.aclose()
    again = Chat(make_runtime())  # once both are closed, the chat is free again
    await again.session.open()
    await again.session.load(path)
    assert again.session.autosave.path == path and not again.notices("warning")


async def test_a_chat_file_changed_by_another_program_is_not_written_over() -> None:
    chat = await open_chat()
    await chat.ask("First question?")
    path = chat.session.autosave.path
    assert path is not None
    edited = path.read_text(encoding="utf-8").replace("First question?", "Edited by hand?")
    path.write_text(edited, encoding="utf-8")  # another program (or an older rsdchat) wrote it
    await chat.ask("Second question?")
    assert path.read_text(encoding="utf-8") == edited  # untouched
    fork = chat.session.autosave.path
    assert fork is not None and fork != path
    assert questions(fork) == ["First question?", "Second question?"]
    assert (
        f"{path} was changed by another program; your turns here are saved as a new chat {fork}"
        in (chat.notices("warning")[-1])
    )
    await chat.ask("Third question?")  # the fork is its own now: it goes on there, without a word
    assert questions(fork)[-1] == "Third question?" and len(chat.notices("warning")) == 1


async def test_save_into_the_history_file_another_chat_writes_is_refused() -> None:
    path = await saved_chat("First question?")
    one, two = Chat(make_runtime()), Chat(make_runtime())
    for chat in (one, two):
        await chat.session.open()
        await chat.session.load(path)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="is not this chat's own file"):
        await two.session.command("/save")  # where it was loaded from: the file `one` writes
    assert path.read_bytes() == before
    await one.session.command("/save")  # `one` writes it: through its autosave, nothing forks
    assert one.session.autosave.path == path and not one.notices("warning")
    await one.ask("More?")
    assert questions(path) == ["First question?", "More?"]


# -- row 3 for real: two `rsdchat` apps in two terminals (tmux) --------------------------------------

LAUNCHER = """
import os
from rsdchat import runtime
from rsdchat.testing import ScriptedModel

DELAY = float(os.environ.get("RSDCHAT_TEST_DELAY", "0"))
LONG = os.environ.get("RSDCHAT_TEST_LONG") == "1"
SHORT = ["Step one: 2+2=4.\\n\\n", "So the answer is \\\\boxed{4}.\\n\\n"]
STEPS = ["word " * 400 + "\\n\\n"] if LONG else SHORT


class Backend:  # every model is a scripted one: the real CLI and app, no model files
    def generator(self, role, model):
        return ScriptedModel(STEPS, name=model, delay=DELAY)

    async def aclose(self):
        pass


runtime.load_backend = lambda name, configs: Backend()
from rsdchat.cli import main

try:
    main()
except SystemExit as ended:  # how it ended, for the test (a process killed by a signal writes nothing)
    code = ended.code if isinstance(ended.code, int) else int(ended.code is not None)
    open(os.environ["RSDCHAT_TEST_STATUS"], "w").write(str(code))
    raise
"""
MODELS = ["--draft", "tiny-draft", "--target", "tiny-target", "--reward", "draft-confidence"]
needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")


class Tmux:
    """Terminals of a tmux server of the test's own, each running the real `rsdchat` (scripted models)."""

    def __init__(self, folder: Path, data: Path) -> None:
        self.socket = f"rsdchat-test-{os.getpid()}-{time.monotonic_ns()}"
        self.launcher = folder / "launch.py"
        self.launcher.write_text(LAUNCHER, encoding="utf-8")
        self.config = folder / "tmux.conf"
        self.config.write_text("set -g remain-on-exit on\n", encoding="utf-8")  # the pane outlives the app
        self.env = {"RSDCHAT_DATA_DIR": str(data), "XDG_CONFIG_HOME": str(folder / "config")}

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, "-f", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, name: str, *args: str, ready: str = "models ready", **env: str) -> None:
        status = {"RSDCHAT_TEST_STATUS": str(self.launcher.with_name(f"status.{name}"))}
        given = [f"{key}={value}" for key, value in (self.env | status | env).items()]
        unset = ["-u", "RSDCHAT_CONFIG", "-u", "COLUMNS", "-u", "LINES"]  # pytest sets 80x24
        command = ["exec", "env", *unset, *given, sys.executable, str(self.launcher), *args]
        self.tmux("new-session", "-d", "-s", name, "-x", "120", "-y", "35", shlex.join(command))
        self.wait_for(name, ready)

    def screen(self, name: str) -> str:
        return self.tmux("capture-pane", "-p", "-t", name)

    def keys(self, name: str, *keys: str) -> None:
        self.tmux("send-keys", "-t", name, *keys)

    def show(self, name: str, fmt: str) -> str:
        return self.tmux("display-message", "-p", "-t", name, fmt).strip()

    def wait_for(self, name: str, text: str, timeout: float = 60) -> None:
        def shown() -> str:
            return f"{text!r} on {name}'s screen:\n{self.screen(name)}"

        until(lambda: text in self.screen(name), timeout, shown)

    def exit_status(self, name: str) -> str:
        """How the app in `name` ended, once it has: its exit status, or 'killed' by a signal."""
        until(lambda: self.show(name, "#{pane_dead}") == "1", what=f"{name} to exit")
        status = self.launcher.with_name(f"status.{name}")
        with contextlib.suppress(AssertionError):
            until(status.exists, 5)
        return status.read_text() if status.exists() else "killed"

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)
        folder = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (folder / self.socket).unlink(missing_ok=True)  # tmux leaves its socket behind


def until(condition: Callable[[], bool], timeout: float = 60, what: str | Callable[[], str] = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.1)


@pytest.fixture
def tmux(tmp_path: Path, data_dir: Path) -> Iterator[Tmux]:
    terminals = Tmux(tmp_path, data_dir)
    try:
        yield terminals
    finally:
        terminals.close()


def asked(path: Path, question: str) -> Callable[[], bool]:
    """Whether `question`'s answer is in the chat file."""

    def done() -> bool:
        try:
            records = lines(path)
        except (OSError, ValueError):
            return False
        turns = [r["turn"] for r in records if r["type"] == "user" and r["content"] == question]
        return bool(turns) and any(r["type"] == "answer" and r["turn"] == turns[-1] for r in records)

    return done


def asked_anywhere(question: str) -> Callable[[], bool]:
    return lambda: any(asked(path, question)() for path in history_files())


@needs_tmux
def test_two_real_chat_apps_on_one_chat_never_lose_a_turn(tmux: Tmux) -> None:
    path = asyncio.run(saved_chat("First question?"))
    tmux.start("one", *MODELS, "--continue")
    tmux.start("two", *MODELS, "--continue")  # the same chat, in a second terminal
    notice = "this chat is open in another rsdchat; your turns here"
    with contextlib.suppress(AssertionError):
        tmux.wait_for("two", notice, 10)
    noticed = notice in tmux.screen("two")
    for name, question in (("one", "From one?"), ("two", "From two?"), ("one", "From one again?")):
        tmux.keys(name, question, "Enter")
        until(asked_anywhere(question), what=f"{name}'s answer to {question}")
    for name in ("one", "two"):
        tmux.keys(name, "C-q")
        assert tmux.exit_status(name) == "0"
    every = {question for chat in history_files() for question in questions(chat)}
    assert every == {"First question?", "From one?", "From two?", "From one again?"}  # no turn lost
    assert noticed  # two said where its turns go
    (fork,) = [p for p in history_files() if p != path]
    assert questions(path) == ["First question?", "From one?", "From one again?"]
    assert questions(fork) == ["First question?", "From two?"]


# -- row 4: /save never writes over what is not this chat's own file ----------------------------------


def _make_symlink(path: Path) -> None:
    (path.parent / "target.txt").write_text("the link's file\n")
    path.symlink_to(path.parent / "target.txt")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("someone's notes\n"), "exists, and is not this chat's own file"),
        (_make_symlink, "is a symbolic link"),
        (lambda p: os.mkfifo(p), "is not a regular file"),  # a device, a pipe: never replaced
        (lambda p: p.mkdir(), "is not a regular file"),
    ],
    ids=["file", "symlink", "fifo", "folder"],
)
async def test_save_refuses_what_is_not_its_own(
    tmp_path: Path, make: Callable[[Path], None], message: str
) -> None:
    chat = await open_chat()
    await chat.ask("What is 2+2?")
    there = tmp_path / "there.jsonl"
    make(there)
    kind = os.lstat(there).st_mode
    with pytest.raises(ConfigError, match=message) as refused:
        await chat.session.command(f"/save {there}")
    assert "\n" not in str(refused.value)
    assert os.lstat(there).st_mode == kind  # still what it was
    if there.is_symlink():
        assert (tmp_path / "target.txt").read_text() == "the link's file\n"
    elif there.is_file():
        assert there.read_text() == "someone's notes\n"
    assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []  # no temp file left


async def test_save_writes_over_its_own_file_only(tmp_path: Path) -> None:
    chat = await open_chat()
    await chat.ask("What is 2+2?")
    mine = tmp_path / "mine.jsonl"
    await chat.session.command(f"/save {mine}")
    await chat.ask("And 3+3?")
    await chat.session.command(f"/save {mine}")  # its own saved file: replaced
    await chat.session.command("/save")  # the same
    assert questions(mine) == ["What is 2+2?", "And 3+3?"]
    other = await open_chat()
    await other.ask("Another chat?")
    with pytest.raises(ConfigError, match="is not this chat's own file"):
        await other.session.command(f"/save {mine}")  # another chat's file
    assert questions(mine) == ["What is 2+2?", "And 3+3?"]
    await other.session.load(mine)
    await other.ask("Go on?")
    await other.session.command("/save")  # a chat loaded from a file saves back to it
    assert questions(mine)[-1] == "Go on?"
    link = tmp_path / "link.jsonl"
    link.symlink_to(mine)
    await other.session.command(f"/save {link}")  # its own file through a link: the file, not the link
    assert link.is_symlink() and questions(mine)[-1] == "Go on?"


# -- row 5: /export writes whole or not at all ---------------------------------------------------------


async def test_export_refuses_a_file_it_did_not_write(tmp_path: Path) -> None:
    chat = await open_chat()
    await chat.ask("What is 2+2?")
    notes = tmp_path / "notes.md"
    notes.write_text("# my notes\n")
    with pytest.raises(ConfigError, match="exists, and this chat did not export it"):
        await chat.session.command(f"/export {notes}")
    assert notes.read_text() == "# my notes\n"
    out = tmp_path / "chat.md"
    await chat.session.command(f"/export {out}")
    await chat.ask("And 3+3?")
    await chat.session.command(f"/export {out}")  # its own export: brought up to date
    assert "And 3+3?" in out.read_text()


async def test_export_on_a_full_disk_leaves_the_old_export_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = await open_chat(["word " * 2000 + "\n\n"], ["word " * 2000 + "\n\n"])
    await chat.ask("Talk a lot")
    out = tmp_path / "chat.md"
    await chat.session.command(f"/export {out}")
    await chat.ask("More?")
    before = out.read_bytes()
    write = os.write
    room = [4096]

    def full_disk(fd: int, data: Any) -> int:  # 4 KB fit, then the disk is full
        if room[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = write(fd, bytes(data)[: room[0]])
        room[0] -= written
        return written

    monkeypatch.setattr("rsdchat.files.os.write", full_disk)
    with pytest.raises(ConfigError) as failed:
        await chat.session.command(f"/export {out}")
    message = str(failed.value)
    assert "No space left on device" in message and "nothing was changed" in message and "\n" not in message
    assert out.read_bytes() == before  # the old export, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.md"]  # no temp file left


# -- row 11: SIGTERM and SIGHUP mid-answer ---------------------------------------------------------


async def test_a_signal_mid_answer_saves_it_as_stopped_and_exits() -> None:
    before = signal.getsignal(signal.SIGTERM)
    app = RsdChatApp(make_runtime(LONG, LONG, delay=0.01))
    async with app.run_test(size=(120, 40)) as pilot:
        assert signal.getsignal(signal.SIGTERM) != before  # the app's own, while it runs
        app.prompt.value = "Talk a lot"
        await pilot.press("enter")
        await wait_until(lambda: (step := app.view.current) is not None and "word word" in step.text)
        os.kill(os.getpid(), signal.SIGTERM)
        await wait_until(lambda: app.return_code is not None)
    assert app.return_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before
    (path,) = history_files()
    answer = lines(path)[-1]
    assert answer["type"] == "answer" and answer["finish_reason"] == "cancelled"
    assert answer["partial"].startswith("word word")


@needs_tmux
@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP (the terminal closed)"])
def test_a_real_chat_app_killed_mid_answer_keeps_the_turn(tmux: Tmux, how: str) -> None:
    tmux.start("chat", *MODELS, RSDCHAT_TEST_LONG="1", RSDCHAT_TEST_DELAY="0.05")
    tmux.keys("chat", "Talk a lot", "Enter")
    tmux.wait_for("chat", "word word word")
    pid = int(tmux.show("chat", "#{pane_pid}"))
    assert tmux.show("chat", "#{alternate_on} #{mouse_any_flag}") == "1 1"
    if how == "SIGTERM":
        os.kill(pid, signal.SIGTERM)
        assert tmux.exit_status("chat") == str(128 + signal.SIGTERM)  # not killed: it exited
        assert tmux.show("chat", "#{alternate_on} #{mouse_any_flag} #{mouse_sgr_flag}") == "0 0 0"
    else:
        tmux.tmux("kill-session", "-t", "chat")  # the terminal goes away: SIGHUP
        until(lambda: not Path(f"/proc/{pid}").exists(), what="the app to exit")
    (path,) = history_files()
    records = lines(path)
    assert [r["type"] for r in records] == ["session", "user", "answer"]
    assert records[-1]["finish_reason"] == "cancelled" and records[-1]["partial"].startswith("word word")


# -- row 12: the chat app needs a terminal ----------------------------------------------------------


def _rsdchat() -> list[str]:
    installed = Path(sys.executable).parent / "rsdchat"
    return (
        [str(installed)]
        if installed.exists()
        else [sys.executable, "-c", "from rsdchat.cli import main; main()"]
    )


@pytest.mark.parametrize("stdin", ["/dev/null", "closed"])
def test_the_chat_app_without_a_terminal_says_so(stdin: str, tmp_path: Path) -> None:
    env = os.environ | {"RSDCHAT_DATA_DIR": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    kwargs: dict[str, Any] = {"stdin": subprocess.DEVNULL}
    if stdin == "closed":
        kwargs = {"stdin": None, "preexec_fn": lambda: os.close(0)}
    done = subprocess.run(_rsdchat(), capture_output=True, text=True, timeout=30, env=env, **kwargs)
    assert done.returncode == 2, done.stderr
    state = "closed" if stdin == "closed" else "not one"
    assert done.stderr.strip() == (
        f"rsdchat: the chat app needs a terminal: stdin is {state}; use `rsdchat solve` for scripts"
    )
    assert done.stdout == ""


# -- row 13: damaged chat files ---------------------------------------------------------------------


def _set(kind: str, key: str, value: Any) -> Callable[[list[dict[str, Any]]], None]:
    def damage(records: list[dict[str, Any]]) -> None:
        record = next(r for r in reversed(records) if r["type"] == kind)
        record[key] = value

    return damage


def _partial(records: list[dict[str, Any]]) -> None:
    answer = next(r for r in reversed(records) if r["type"] == "answer")
    answer.update(partial="half a step", partial_index="two", partial_author="draft")


DAMAGED = {  # what a hand edit did, and the line and field the error names
    "bad cost": (_set("answer", "cost", "a lot"), "answer", "field 'cost' is not an object"),
    "cost not numbers": (
        _set("answer", "cost", {"draft": {"prefill_tokens": "many"}}),
        "answer",
        "field 'cost' has a draft.prefill_tokens that is not a number",
    ),
    "models as a string": (_set("session", "models", "qwen"), "session", "field 'models' is not an object"),
    "bad partial_index": (_partial, "answer", "field 'partial_index' is not a whole number ≥ 0"),
    "tokens many": (_set("step", "tokens", "many"), "step", "field 'tokens' is not a number ≥ 0"),
    "bounds": (_set("step", "reward_bounds", ["low", "high"]), "step", "field 'reward_bounds'"),
    "decision weighting": (
        _set("step", "decision", {"weighting": "binary"}),
        "step",
        "field 'decision' has a weighting that is not an object",
    ),
    "turn as text": (_set("user", "turn", "1"), "user", "field 'turn' is not a whole number"),
}


async def damaged_chat(name: str, *, older: bool = False) -> tuple[Path, str]:
    """A chat in the history, damaged by `name`; the message expected (file:line: field)."""
    path = await saved_chat("What is 2+2?")
    damage, kind, field = DAMAGED[name]
    records = lines(path)
    damage(records)
    number = max(i for i, r in enumerate(records, 1) if r["type"] == kind)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path, f"{path}:{number}: {field}" if kind != "user" else f"{path}:{number}: user record: {field}"


@pytest.mark.parametrize("name", list(DAMAGED))
async def test_a_damaged_chat_is_one_line_on_resume(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path, message = await damaged_chat(name)

    def started(self: RsdChatApp) -> None:
        raise AssertionError("the app started with a damaged chat")

    monkeypatch.setattr(RsdChatApp, "run", started)
    with pytest.raises(TranscriptError) as refused:
        run_chat(Settings(), path)  # `rsdchat --resume PATH`: refused before the app starts (exit 2)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)
    assert refused.value.exit_code == 2


@pytest.mark.parametrize("name", list(DAMAGED))
async def test_continue_skips_a_damaged_chat_and_says_so(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    good = await saved_chat("An older, readable chat?")
    os.utime(good, (1_000_000_000, 1_000_000_000))
    _, message = await damaged_chat(name)
    transcript, skipped = continue_chat()
    assert transcript.path == good and len(skipped) == 1 and skipped[0].startswith(message)
    opened: list[RsdChatApp] = []
    monkeypatch.setattr(RsdChatApp, "run", lambda self: opened.append(self))
    assert run_chat(Settings(), continue_=True) == 0  # `rsdchat -c`
    (app,) = opened
    assert isinstance(app._resume, Transcript) and app._resume.path == good
    (note,) = app._notes
    assert note.startswith(f"1 saved chat cannot be read: {message}") and note.endswith(f"continuing {good}")
    assert [c.path for c in saved_chats()] == [good]  # /history lists what can be read
    assert scan_chats()[1] == skipped
    good.unlink()  # only the damaged one left: one line, exit 2
    with pytest.raises(ConfigError, match=r"no saved chat to continue in .*: 1 saved chat cannot be read: "):
        continue_chat()


@pytest.mark.parametrize("name", list(DAMAGED))
async def test_a_damaged_chat_is_one_line_on_load(name: str) -> None:
    path, message = await damaged_chat(name)
    app = RsdChatApp(make_runtime())
    async with app.run_test(size=(120, 40)) as pilot:
        said = capture_notes(app)
        app.prompt.value = f"/load {path}"
        await pilot.press("enter")
        await pilot.pause()
        assert app.is_running
        (refused,) = [s for s in said if s.startswith("/load")]
        assert refused.startswith(f"/load: {message}") and "\n" not in refused
        assert app.session.transcript.turns == 0  # nothing loaded, nothing changed


def _bad_values() -> list[Any]:
    return ["many", -1, 2.5, [], {}, [1, "x"], True, {"draft": "x"}]


async def test_no_damaged_field_crashes_the_chat(tmp_path: Path) -> None:
    """Every field of every record, set to values of the wrong kind: refused in one line, or shown."""
    stopped = await open_chat(LONG, LONG, delay=0.002)
    answering = stopped.start("Talk a lot")
    await wait_until(lambda: "word word" in stopped.tokens())
    stopped.session.stop()
    await answering
    await stopped.session.command("/delta 0.8")
    await stopped.ask("Again?")
    records = stopped.session.transcript.records
    path = tmp_path / "variant.jsonl"

    def load(changed: list[dict[str, Any]]) -> Transcript | None:
        path.write_text("".join(json.dumps(r) + "\n" for r in changed), encoding="utf-8")
        try:
            return Transcript.load(path)
        except TranscriptError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)
            return None

    shown: dict[str, list[dict[str, Any]]] = {}  # per bad value: every damage it loads with, at once
    refused = 0
    for index, record in enumerate(records):
        for key in [*record, "retry_of", "partial_index", "kept", "tokens"]:
            for value in _bad_values():
                changed = json.loads(json.dumps(records))
                changed[index][key] = value
                transcript = load(changed)
                if transcript is None:
                    refused += 1
                    continue
                transcript.to_markdown()
                transcript.totals()
                transcript.history()
                together = shown.setdefault(json.dumps(value), json.loads(json.dumps(records)))
                together[index][key] = value
    assert refused and shown
    app = RsdChatApp(make_runtime())
    async with app.run_test(size=(120, 40)) as pilot:
        for together in shown.values():  # drawn by the app: no crash
            transcript = load(together)
            assert transcript is not None
            await app.session.show(transcript)
            await pilot.pause()
            assert app.is_running
            transcript.to_markdown()


async def test_a_last_line_cut_by_a_crash_is_left_out(tmp_path: Path) -> None:
    path = await saved_chat("What is 2+2?", "And 3+3?")
    whole = path.read_bytes()
    count = whole.count(b"\n")
    for cut in (
        b'{"type": "answer", "turn": 3, "content": "wo',
        '{"type": "user", "content": "é'.encode()[:-1],
    ):
        path.write_bytes(whole + cut)  # a crash mid-write: no newline, even mid-character
        transcript = Transcript.load(path)
        assert len(transcript.records) == count and transcript.cut == count + 1
    chat = Chat(make_runtime())
    await chat.session.open()
    await chat.session.load(path)
    assert f"{path}:{count + 1}: the last line was cut short" in chat.notices("warning")[0]
    await chat.ask("Go on?")
    assert chat.session.autosave.path == path  # the same file, the cut line gone
    assert questions(path) == ["What is 2+2?", "And 3+3?", "Go on?"]
    whole_line = json.dumps({"type": "change", "text": "δ 0.7 → 0.8"}).encode()
    path.write_bytes(whole + whole_line)  # a last line without its newline but whole: kept
    assert Transcript.load(path).records[-1]["type"] == "change"
