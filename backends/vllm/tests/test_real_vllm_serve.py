"""`rsdchat serve` in front of real vLLM servers (its CPU build), asked by the official openai SDK:
the draft and target served by `vllm serve`, each step judged by a process reward model that vLLM
serves through its pooling API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from real_vllm import Server, free_port

openai = pytest.importorskip("openai", reason="the openai SDK is a dev dependency (pip install openai)")

RSDCHAT = [sys.executable, "-c", "from rsdchat.cli import main; main()"]
QUESTION = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell altogether?"


@pytest.fixture
def served(vllm_generator: Server, vllm_prm: Server, tmp_path: Path) -> Iterator[str]:
    """`rsdchat serve` with both models on the vLLM generator and qwen-prm on the vLLM PRM; its /v1 URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RSDCHAT_", "OPENAI_"))}
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "state")}
    args = [
        *RSDCHAT, "serve", "--port", str(port), "--backend", "openai",
        "--draft-url", vllm_generator.url, "--target-url", vllm_generator.url,
        "--draft", vllm_generator.name, "--target", vllm_generator.name,
        "--reward", "qwen-prm", "--reward-url", vllm_prm.url, "--reward-model", vllm_prm.name,
        "--max-steps", "3", "--max-step-tokens", "32",
    ]  # fmt: skip
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a hang guard: loading talks to three vLLM servers
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "rsdchat serve did not start"
            time.sleep(0.5)  # polling a starting server: the next try, not a wait for an event
        yield f"{url}/v1"
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
        assert "Traceback" not in (tmp_path / "serve.log").read_text()


def test_the_openai_sdk_gets_rsd_over_vllm_with_each_steps_prm_reward(served: str) -> None:
    client = openai.OpenAI(base_url=served, api_key="unused", max_retries=0, timeout=600)
    messages = [{"role": "user", "content": QUESTION}]
    reply = client.chat.completions.create(model="rsd", messages=messages)  # type: ignore[arg-type]
    steps = reply.model_extra["rsd"]["steps"]  # type: ignore[index]
    judged = [s for s in steps if s["author"] == "draft"]
    assert judged and {s["reward_source"] for s in judged} == {"qwen-prm"}
    assert all(0.0 <= s["reward"] <= 1.0 for s in judged)  # P(good step) from vLLM's /pooling
    kept = "".join(s["text"] for s in steps if s["accepted"])
    assert reply.choices[0].message.content == kept
    assert reply.usage is not None and reply.usage.model_extra["rsd"]["roles"]["reward"]["prefill_tokens"] > 0  # type: ignore[index]

    stream = client.chat.completions.create(model="rsd", messages=messages, stream=True)  # type: ignore[arg-type]
    chunks = list(stream)
    provenance = [c.model_extra["rsd"] for c in chunks if c.model_extra and c.model_extra.get("rsd")]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert provenance and {p["reward_source"] for p in provenance if p["author"] == "draft"} == {"qwen-prm"}
    assert text == reply.choices[0].message.content  # greedy: the same steps, now step by step
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
