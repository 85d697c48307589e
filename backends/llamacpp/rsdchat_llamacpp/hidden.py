"""The draft's last hidden state (after its final norm) at step tags, read in process.

llama.cpp gives a token's hidden state when the context is in embeddings mode (pooling
NONE: one vector per token, the `result_norm` that feeds the output layer). Embeddings
mode is switched on only for the tokens from the first tag on, then off again, so writing
steps is untouched.

Scoring one step in the draft's own conversation costs one token: the draft has just read
the step, so its cache holds everything before the tag; the tag is read, its state taken,
and the tag dropped from the cache again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from rsdchat.plugin_api import Context
from rsdchat_llamacpp.generator import LlamaModel, common_prefix

State = npt.NDArray[np.float32]


def read_states(
    model: LlamaModel, tokens: list[int], tag: int, drop_last_tag: bool
) -> tuple[list[State], int]:
    """The hidden state at each `tag` in `tokens` (run under the model's lock, in a worker thread).

    Reuses the cached prefix up to the first tag; returns the states and how many tokens were
    read. With `drop_last_tag`, the cache ends just before the last tag (the draft goes on
    writing from there).
    """
    positions = [i for i, token in enumerate(tokens) if token == tag]
    if not positions:
        raise ValueError("no step tag in the tokens")
    llm = model.llm
    first = positions[0]
    keep = min(common_prefix(list(llm.input_ids[: llm.n_tokens]), tokens), first)
    if len(tokens) > model.n_ctx:
        raise model.context_full(len(tokens))
    model.truncate(keep)
    if first > keep:
        model.decode(tokens[keep:first])
    rest = tokens[first:]
    states = decode_states(model, rest, lambda i: rest[i] == tag)
    if drop_last_tag:
        model.truncate(positions[-1])
    return states, len(tokens) - keep


def decode_states(model: LlamaModel, tokens: list[int], wanted: Callable[[int], bool]) -> list[State]:
    """Read `tokens` after the cached ones in embeddings mode: the state of each i-th with `wanted(i)`."""
    import llama_cpp

    llm = model.llm
    width, states = llm.n_embd(), []
    llama_cpp.llama_set_embeddings(llm._ctx.ctx, True)
    try:
        for start in range(0, len(tokens), llm.n_batch):
            batch = tokens[start : start + llm.n_batch]
            n_past = llm.n_tokens
            llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=True)  # embeddings need every output
            llm._ctx.decode(llm._batch)
            llm.input_ids[n_past : n_past + len(batch)] = batch
            llm.n_tokens += len(batch)
            for i in range(len(batch)):
                if wanted(start + i):
                    row = llama_cpp.llama_get_embeddings_ith(llm._ctx.ctx, i)
                    states.append(np.ctypeslib.as_array(row, shape=(width,)).astype(np.float32))
    finally:
        llama_cpp.llama_set_embeddings(llm._ctx.ctx, False)
    return states


def tag_tokens(model: LlamaModel, context: Context, written: str, tag: int) -> list[int]:
    """`context` as the model reads it, each `written` in the reply read as the token `tag`
    (whatever this vocabulary calls it: Qwen2.5's GGUF names 151651 `<|quad_end|>`, not `<extra_0>`)."""
    name = model.llm._model.token_get_text(tag)
    return model.tokens(dataclasses.replace(context, response=context.response.replace(written, name)))
