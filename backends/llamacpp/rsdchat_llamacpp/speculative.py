"""Token-level speculative decoding in process: the draft proposes, the target checks in one batch.

Greedy only. Each round the draft writes up to `lookahead` tokens; the target reads them
in one batch (together with the one token of its own it has not read yet) and keeps the
longest prefix it would have chosen itself, then adds its own next token. So the text
is the target's greedy text, up to llama.cpp's batch-vs-single numerics (a near-tie
between two tokens can fall the other way).

The draft and the target must share a vocabulary (the embedded Qwen pair does).
"""

from __future__ import annotations

import asyncio
import threading
import time

from rsdchat.plugin_api import (
    Assist,
    BackendError,
    ConfigError,
    Context,
    Feature,
    Generation,
    Role,
    StepGenerator,
    StepRequest,
    TokenSink,
    Usage,
)
from rsdchat_llamacpp.generator import Cancelled, LlamaModel, Logits, StepWriter, agreed, is_eog


class SpeculativeModel:
    """A `StepGenerator` that writes the target's greedy steps with the draft's proposals."""

    features: frozenset[Feature] = frozenset()  # greedy only, and the draft is what proposes

    def __init__(self, target: LlamaModel, draft: LlamaModel, lookahead: int) -> None:
        if target.vocab_size != draft.vocab_size:
            raise ConfigError(
                f"token-level speculative decoding needs one vocabulary: {draft.info.name} has "
                f"{draft.vocab_size} tokens, {target.info.name} {target.vocab_size}"
            )
        if draft is target:
            raise ConfigError(
                f"token-level speculative decoding needs two models; both are {target.info.name}"
            )
        if lookahead < 1:
            raise ConfigError(f"the lookahead of speculative decoding must be ≥ 1, got {lookahead}")
        self.target, self.draft, self.lookahead = target, draft, lookahead
        self.info = target.info

    async def generate(
        self, context: Context, request: StepRequest, on_token: TokenSink | None = None
    ) -> Generation:
        if request.temperature > 0:
            raise ConfigError("token-level speculative decoding is greedy only (temperature 0)")
        loop = asyncio.get_running_loop()
        cancel = threading.Event()

        def emit(text: str) -> None:
            if on_token is not None and not cancel.is_set():
                loop.call_soon_threadsafe(on_token, text)

        def work() -> Generation:
            with self.draft.lock, self.target.lock:  # always in this order
                try:
                    return self._generate(context, request, emit, cancel)
                except RuntimeError as exc:  # llama_decode failures
                    raise BackendError(f"llama.cpp failed during speculative decoding: {exc}") from None

        try:
            return await asyncio.to_thread(work)
        except asyncio.CancelledError:
            cancel.set()
            raise

    def _generate(
        self, context: Context, request: StepRequest, emit: TokenSink, cancel: threading.Event
    ) -> Generation:
        started = time.perf_counter()
        target, draft = self.target, self.draft
        prompt = target.tokens(context)
        budget = min(request.max_tokens, target.n_ctx - len(prompt) - self.lookahead - 1)
        if budget <= 0:
            raise target.context_full(len(prompt))  # no room for a proposal and the token after it
        target_read, logits = target.prefill(prompt)
        draft_read, draft_seconds, proposed = 0, 0.0, 0
        pending: list[int] = []  # the target's own token it has not read yet (at most one)
        out: list[int] = []
        writer = StepWriter(target.llm, request.stop, emit)
        done = False
        while not done and writer.tokens < budget:
            if cancel.is_set():
                raise Cancelled
            tic = time.perf_counter()
            read, proposal = self._propose(prompt + out, min(self.lookahead, budget - writer.tokens))
            draft_read += read
            proposed += len(proposal)
            draft_seconds += time.perf_counter() - tic
            base = target.cached
            rows = target.decode(pending + proposal, all_logits=True)
            target_read += len(pending) + len(proposal)
            predictions: list[Logits] = [logits, *rows] if not pending else rows[len(pending) - 1 :]
            accepted = agreed(predictions, proposal)
            written = proposal[:accepted]
            if accepted == len(proposal) and proposal and is_eog(target.llm, proposal[-1]):
                own: int | None = None  # the draft's end of reply, and the target agrees
            else:
                own = int(predictions[accepted].argmax())
                written = [*written, own]
            target.truncate(base + len(pending) + accepted)
            pending = [own] if own is not None else []
            for position, token in enumerate(written):
                if writer.tokens >= budget:
                    break
                out.append(token)
                done = writer.add(token, predictions[position])
                if done:
                    break
        seconds = time.perf_counter() - started
        generated = writer.tokens
        usage = Usage(max(0, target_read - generated), generated, seconds - draft_seconds)
        helper = Assist(Role.DRAFT, Usage(draft_read, proposed, draft_seconds), draft.info.n_params)
        return writer.generation(usage, (helper,))

    def _propose(self, sequence: list[int], count: int) -> tuple[int, list[int]]:
        """The draft's next `count` greedy tokens after `sequence` (and how many tokens it read)."""
        draft = self.draft
        read, logits = draft.prefill(sequence)
        proposal: list[int] = []
        for _ in range(count):
            token = int(logits.argmax())
            proposal.append(token)
            if is_eog(draft.llm, token) or len(proposal) == count:
                break
            (logits,) = draft.decode([token])  # the pass that writes the next token
        return read, proposal


def speculative(target: LlamaModel, draft: StepGenerator, lookahead: int) -> SpeculativeModel:
    if not isinstance(draft, LlamaModel):
        raise ConfigError(
            "token-level speculative decoding needs the draft in process too (llamacpp backend)"
        )
    return SpeculativeModel(target, draft, lookahead)
