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
from rsdchat.prm.head import STEP_TAG, STEP_TAG_ID
from rsdchat.prm.train import PENALTIES, auc, folds_of, out_of_fold
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat_llamacpp import LlamaCppBackend, LlamaCppConfig, LlamaModel
from rsdchat_llamacpp.hidden import decode_states, read_states, tag_tokens
from rsdchat_openai.rewards import QWEN_SYSTEM


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
        card = (Message("system", QWEN_SYSTEM), Message("user", record["question"]))
        reply = "".join(s.strip() + STEP_TAG for s in steps)
        qwen_ids = tag_tokens(draft, Context(card, reply), STEP_TAG, STEP_TAG_ID)
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


def _all_states(model: LlamaModel, tokens: list[int]) -> np.ndarray:
    """Every token's last hidden state, read from an empty cache."""
    model.truncate(0)
    return np.array(decode_states(model, tokens, lambda _: True))


if __name__ == "__main__":
    asyncio.run(main())
