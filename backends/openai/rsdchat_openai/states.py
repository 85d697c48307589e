"""The draft's hidden states from vLLM serving it as an embedding model, for `rsdchat train-prm`.

A server that writes the draft's steps cannot also give its hidden states (a vLLM server runs one
kind of model), so train-prm reads them from a second server of the same weights:

    vllm serve DRAFT --runner pooling --convert embed

`/pooling` with task `embed` and `use_activation: false` returns the final-norm hidden state at
the last token (vLLM's default LAST pooling for a decoder), unnormalised: exactly what the
in-process draft gives at the step tag (cosine 0.9998 against llama.cpp's Q4_K_M, measured by
backends/vllm/tests/test_real_vllm_states.py). The conversation is rendered by the server's own
chat template and tokenized there; the step tag is appended as a token id, so no text can stand
in for it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rsdchat.plugin_api import BackendError, Context, Usage
from rsdchat_openai.http import Pool
from rsdchat_openai.rewards import pooling_rows
from rsdchat_openai.wire import Headers, token_ids

HOW = "serve the draft with `vllm serve DRAFT --runner pooling --convert embed`"


class PooledStates:
    """A `ReadsStates` on a vLLM pooling server of the draft (`draft_states_url`)."""

    def __init__(self, pool: Pool, model: str, headers: Headers) -> None:
        self.pool, self.model, self._headers = pool, model, headers
        self._where = f"draft states server ({model} at {', '.join(r.url for r in pool.replicas)})"

    async def tag_state(self, context: Context, tag: int) -> tuple[Sequence[float], Usage]:
        started = time.perf_counter()
        prompt = await self._headers.header(context.messages) + context.response
        body = {"model": self.model, "prompt": prompt, "add_special_tokens": False}
        tokens = token_ids(await self.pool.post("/tokenize", body), self.pool)
        answer = await self.pool.post(
            "/pooling",
            {
                "model": self.model,
                "input": [*tokens, tag],
                "task": "embed",
                "use_activation": False,  # the hidden state as it is, not normalised
                "add_special_tokens": False,
            },
        )
        state = pooling_rows(answer, f"{self._where}: malformed /pooling answer")
        if not state or not all(isinstance(x, int | float) for x in state):
            raise BackendError(f"{self._where}: /pooling gave no hidden state: {HOW}")
        usage = answer.get("usage")
        read = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        spent = Usage(read if isinstance(read, int) else len(tokens) + 1, 0, time.perf_counter() - started)
        return [float(x) for x in state], spent

    async def aclose(self) -> None:
        await self.pool.aclose()
