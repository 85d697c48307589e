"""Do the vLLM-served PRM checkpoint and the in-process `draft-prm` head give the same rewards?

    .venv/bin/python benchmarks/prm_agreement.py --steps 40

Writes a Qwen2ForProcessRewardModel checkpoint (`rsdchat.prm.checkpoint`) from the shipped
head and the draft's backbone that `bash scripts/setup_vllm.sh --checkpoints` rebuilt from the
packaged GGUF (bf16), serves it with vLLM's CPU build (`--runner pooling`), and scores real
labelled draft steps both ways:

- the draft's own view (what `draft-prm` reads while RSD runs: the draft's conversation, then
  the step tag), sent to vLLM's /pooling as the very same token ids;
- the qwen-prm view (the model card's system prompt, steps joined by `<extra_0>`), through the
  unchanged `qwen-prm` reward source, and in process on the same text.

The two backbones hold the same weights (the checkpoint is the GGUF's Q4_K_M dequantized, then
rounded to bf16) but compute differently (llama.cpp's quantized kernels vs vLLM's bf16).
Printed: the largest and mean difference of P(good) and of its logit, per view.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np

from rsdchat.core.types import Context, Generation, Message, Role
from rsdchat.plugins import RewardContext
from rsdchat.prm.checkpoint import write_checkpoint
from rsdchat.prm.head import STEP_TAG_ID
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat.rewards import make_reward
from rsdchat_llamacpp import LlamaCppBackend, LlamaCppConfig
from rsdchat_llamacpp.hidden import read_states, tag_tokens
from rsdchat_llamacpp.prm import load_head, shipped_head
from rsdchat_openai.config import OpenAIConfig
from rsdchat_openai.rewards import positive_probability, qwen_prm_chat, split_steps
from rsdchat_vllm.testing import VllmServer, built_checkpoint


def logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def steps_of(path: Path, limit: int) -> list[tuple[Context, str]]:
    found: list[tuple[Context, str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        messages = (Message("system", MATH_SYSTEM_PROMPT), Message("user", record["question"]))
        response = ""
        for step, verdict in zip(record["draft"]["steps"], record["labels"], strict=True):
            if verdict is not None and len(found) < limit:
                found.append((Context(messages, response), step["text"]))
            response += step["text"]
    return found


def report(name: str, ours: list[float], theirs: list[float]) -> None:
    dp = np.abs(np.array(ours) - np.array(theirs))
    dz = np.abs(np.array([logit(p) for p in ours]) - np.array([logit(p) for p in theirs]))
    spread = np.array([logit(p) for p in ours])
    print(
        f"{name:18s} {len(dp)} steps: |ΔP(good)| max {dp.max():.4f} mean {dp.mean():.4f} · "
        f"|Δlogit| max {dz.max():.3f} mean {dz.mean():.3f} (the logits' own spread: sd {spread.std():.3f}, "
        f"P(good) {min(ours):.3f}–{max(ours):.3f})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=Path("benchmarks/data/gsm8k-train-steps.jsonl"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    backbone = built_checkpoint("qwen-prm")
    if backbone is None:
        raise SystemExit("no backbone checkpoint: run bash scripts/setup_vllm.sh --checkpoints")
    head = load_head(shipped_head())
    steps = steps_of(args.labels, args.steps)
    backend = LlamaCppBackend(LlamaCppConfig())
    draft = backend.generator(Role.DRAFT, "qwen2.5-coder-0.5b")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_checkpoint(backbone, head, Path(tmp) / "draft-prm")
        serve = ("--runner", "pooling", "--dtype", args.dtype)
        with VllmServer(checkpoint, "draft-prm", Path(tmp) / "vllm.log", *serve) as server:
            client = httpx.Client(base_url=server.url, timeout=300)
            own_ours, own_vllm = [], []
            for context, text in steps:
                tokens = [*draft.tokens(context.extend(text)), STEP_TAG_ID]
                state, _ = await draft.tag_state(context.extend(text), STEP_TAG_ID)
                own_ours.append(head.p_good(np.asarray(state)))
                body = {"model": "draft-prm", "input": tokens, "task": "token_classify"}
                rows = client.post("/pooling", json=body).json()["data"][0]["data"]
                own_vllm.append(positive_probability(rows[-1], "no 2-class row"))
            configs = {"openai": OpenAIConfig(reward_url=server.url, reward_model="draft-prm")}
            source = make_reward("qwen-prm", RewardContext(None, None, configs))
            qwen_ours, qwen_vllm = [], []
            for context, text in steps:
                score = await source.score(context, Generation(text, "step"))
                qwen_vllm.append(score.reward)
                chat = qwen_prm_chat(context, [*split_steps(context.response, "\n\n"), text.strip()])
                turns = tuple(Message(cast(Any, t["role"]), t["content"]) for t in chat[:-1])
                tokens = tag_tokens(draft, Context(turns, chat[-1]["content"]), "<extra_0>", STEP_TAG_ID)
                states, _ = draft._locked(read_states, draft, tokens, STEP_TAG_ID, False)
                qwen_ours.append(head.p_good(states[-1]))
            await source.aclose()
    await backend.aclose()
    print(f"vLLM --dtype {args.dtype} vs llama.cpp Q4_K_M, head {shipped_head().name}")
    report("draft's own view", own_ours, own_vllm)
    report("qwen-prm view", qwen_ours, qwen_vllm)


if __name__ == "__main__":
    asyncio.run(main())
