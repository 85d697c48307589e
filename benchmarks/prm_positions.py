"""Where in the draft is a step's quality readable? Probe AUC at four places, out of fold.

    .venv/bin/python benchmarks/prm_positions.py --questions 71

For the labelled steps of the first N questions of benchmarks/data/gsm8k-train-steps.jsonl,
the draft (Qwen2.5-Coder-0.5B, in process) gives its last hidden state (after the final norm)

- at the step tag `<extra_0>` read after the step in its own conversation (what `draft-prm` reads);
- at the step tag in `qwen-prm`'s chat (the model card's system prompt, steps joined by the tag);
- at the step's own last token;
- averaged over the step's tokens (not expressible by STEP pooling: one position per tag).

Each is fitted as `rsdchat train-prm` fits its head (a probe, folds by question) for every
penalty; printed: the out-of-fold AUC of each place and penalty.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import numpy as np

from rsdchat.core.types import Context, Message, Role
from rsdchat.prm.head import STEP_TAG_ID
from rsdchat.prm.train import PENALTIES, auc, folds_of, out_of_fold
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat_llamacpp import LlamaCppBackend, LlamaCppConfig
from rsdchat_llamacpp.hidden import read_states
from rsdchat_openai.rewards import QWEN_SYSTEM

QUAD_END = "<|quad_end|>"  # token 151651's name in the GGUF


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=Path("benchmarks/data/gsm8k-train-steps.jsonl"))
    parser.add_argument("--questions", type=int, default=71)
    args = parser.parse_args()
    backend = LlamaCppBackend(LlamaCppConfig())
    draft = backend.generator(Role.DRAFT, "qwen2.5-coder-0.5b")
    places: dict[str, list[np.ndarray]] = {
        "tag, own view": [],
        "tag, qwen-prm view": [],
        "last token": [],
        "mean": [],
    }
    good: list[float] = []
    groups: list[str] = []
    for line in args.labels.read_text(encoding="utf-8").splitlines()[: args.questions]:
        record = json.loads(line)
        if all(v is None for v in record["labels"]):
            continue
        steps = [s["text"] for s in record["draft"]["steps"]]
        messages = (Message("system", MATH_SYSTEM_PROMPT), Message("user", record["question"]))
        own = Context(messages, "".join(steps))
        # every token's state in one pass, marking where each step ends
        bounds = [len(draft.tokens(Context(messages, "".join(steps[:k])))) for k in range(len(steps) + 1)]
        states = draft._locked(_all_states, draft, draft.tokens(own))
        chat = draft._format(
            messages=[
                {"role": "system", "content": QWEN_SYSTEM},
                {"role": "user", "content": record["question"]},
            ]
        ).prompt
        chat += "".join(s.strip() + QUAD_END for s in steps)
        qwen_ids = list(draft.llm.tokenize(chat.encode(), add_bos=False, special=True))
        qwen, _ = draft._locked(read_states, draft, qwen_ids, STEP_TAG_ID, False)
        for k, verdict in enumerate(record["labels"]):
            if verdict is None:
                continue
            state, _ = await draft.tag_state(Context(messages, "".join(steps[: k + 1])), STEP_TAG_ID)
            places["tag, own view"].append(np.asarray(state))
            places["tag, qwen-prm view"].append(qwen[k])
            places["last token"].append(states[bounds[k + 1] - 1])
            places["mean"].append(states[bounds[k] : bounds[k + 1]].mean(axis=0))
            good.append(1.0 if verdict == "good" else 0.0)
            groups.append(record["id"])
    await backend.aclose()
    y = np.array(good)
    folds = folds_of(groups, 5)
    print(f"{len(y)} labelled steps from {len(set(groups))} questions, {int((y == 0).sum())} bad")
    for name, rows in places.items():
        x = np.vstack(rows).astype(np.float64)
        scores = {l2: auc(list(out_of_fold(x, y, folds, l2)), list((1 - y).astype(int))) for l2 in PENALTIES}
        print(f"  {name:20s} " + "  ".join(f"λ {l2:g}: {a:.3f}" for l2, a in scores.items()))


def _all_states(model: object, tokens: list[int]) -> np.ndarray:
    """Every token's last hidden state, read from an empty cache."""
    import llama_cpp

    llm = model.llm  # type: ignore[attr-defined]
    model.truncate(0)  # type: ignore[attr-defined]
    width, rows = llm.n_embd(), []
    llama_cpp.llama_set_embeddings(llm._ctx.ctx, True)
    try:
        for start in range(0, len(tokens), llm.n_batch):
            batch = tokens[start : start + llm.n_batch]
            llm._batch.set_batch(batch=batch, n_past=llm.n_tokens, logits_all=True)
            llm._ctx.decode(llm._batch)
            llm.input_ids[llm.n_tokens : llm.n_tokens + len(batch)] = batch
            llm.n_tokens += len(batch)
            for i in range(len(batch)):
                row = llama_cpp.llama_get_embeddings_ith(llm._ctx.ctx, i)
                rows.append(np.ctypeslib.as_array(row, shape=(width,)).copy())
    finally:
        llama_cpp.llama_set_embeddings(llm._ctx.ctx, False)
    return np.array(rows)


if __name__ == "__main__":
    asyncio.run(main())
