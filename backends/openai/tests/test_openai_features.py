"""A setting the HTTP backends cannot honour is refused up front, not ignored."""

from __future__ import annotations

import subprocess
import sys

from faulty_server import FaultyServer

RSDCHAT = [sys.executable, "-c", "from rsdchat.cli import main; main()"]


def solve(url: str, *args: str) -> list[str]:
    return [
        *RSDCHAT, "solve", "What is 2+2?", "--backend", "openai", "--draft", "m", "--target", "m",
        "--draft-url", url, "--target-url", url, "--reward", "draft-confidence", *args,
    ]  # fmt: skip


def test_reuse_draft_is_refused_by_the_openai_backend_in_one_line() -> None:
    with FaultyServer("ok") as server:
        result = subprocess.run(
            solve(server.url, "--reuse-draft"), capture_output=True, text=True, timeout=60
        )
        asked = [path for _, path, _ in server.requests]
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "rsdchat: setting reuse_draft: the openai backend's target (m) cannot check a rejected draft step; "
        "turn reuse_draft off"
    )
    assert result.stdout == ""
    assert "/v1/completions" not in asked  # refused before any step was written
