"""One GGUF model in process: writes steps and scores continuations, reusing its KV cache.

The model keeps the tokens it has already read. Each call renders the conversation
with the model's own chat template, finds the longest prefix it has seen, drops the
rest of the cache and reads only the new tokens: a step costs its new tokens, not
the whole prefix again.
"""

from __future__ import annotations

import asyncio
import codecs
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rsdchat.plugin_api import (
    Assist,
    BackendError,
    Context,
    ContextFull,
    Feature,
    FinishReason,
    Generation,
    Logprobs,
    ModelInfo,
    StepGenerator,
    StepRequest,
    TokenSink,
    Usage,
    step_end,
)
from rsdchat_llamacpp.embedded import ModelError
from rsdchat_llamacpp.llamalog import LLAMA_LOG, errors_of_this_thread, hush
from rsdchat_llamacpp.loading import extra_buffers, model_defaults

if TYPE_CHECKING:
    from llama_cpp import Llama

Logits = npt.NDArray[np.float32]
VERIFY_CHUNK = 8  # proposed tokens checked per batch: at most this many are read in vain


class Cancelled(Exception):
    """The awaiting task was cancelled; the worker thread stops at the next token."""


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def log_softmax_at(logits: Logits, token: int) -> float:
    top = float(logits.max())
    return float(logits[token]) - top - float(np.log(np.exp(logits - top).sum()))


def logprob_and_entropy(logits: Logits, token: int) -> tuple[float, float]:
    """log P(token) and the entropy (nats) of the next-token distribution, in one pass."""
    shifted = logits - logits.max()
    weights = np.exp(shifted)
    total = float(weights.sum())
    log_total = float(np.log(total))
    entropy = log_total - float(np.dot(weights, shifted)) / total
    return float(shifted[token]) - log_total, max(0.0, entropy)


def agreed(predictions: list[Logits], proposal: list[int]) -> int:
    """How many leading tokens of `proposal` the model would have chosen itself, greedily:
    `predictions[i]` is its next-token logits just before `proposal[i]`."""
    n = 0
    while n < len(proposal) and int(predictions[n].argmax()) == proposal[n]:
        n += 1
    return n


def sample(logits: Logits, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """Greedy at temperature 0, else temperature + nucleus (top-p) sampling."""
    if temperature <= 0.0:
        return int(logits.argmax())
    scaled = (logits - logits.max()) / temperature
    probs = np.exp(scaled.astype(np.float64))
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs)
        keep = order[: int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1]
        return int(rng.choice(keep, p=probs[keep] / probs[keep].sum()))
    return int(rng.choice(len(probs), p=probs))


class StepWriter:
    """Turns the tokens chosen one by one into a step: text, streamed pieces, log-probabilities.

    `add` returns True once the step is complete: a stop string was written (the text is
    cut just after it) or the model ended its reply.
    """

    def __init__(self, llm: Llama, stops: tuple[str, ...], emit: TokenSink) -> None:
        self.llm, self.stops, self.emit = llm, stops, emit
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.tokens = 0  # chosen so far, an end-of-reply token included
        self.finish: FinishReason = "length"
        self.logprobs: list[float] = []
        self.pieces: list[str] = []
        self.entropies: list[float] = []

    def add(self, token: int, logits: Logits) -> bool:
        self.tokens += 1
        if is_eog(self.llm, token):
            self.finish = "eos"
            return True
        logprob, entropy = logprob_and_entropy(logits, token)
        piece = self.decoder.decode(self.llm.detokenize([token]))
        self.logprobs.append(logprob)
        self.entropies.append(entropy)
        self.pieces.append(piece)
        end = step_end(self.text, piece, self.stops)
        if end is not None:
            self.emit((self.text + piece)[len(self.text) : end])
            self.text, self.finish = (self.text + piece)[:end], "step"
            return True
        self.text += piece
        self.emit(piece)
        return False

    def generation(self, usage: Usage, assists: tuple[Assist, ...] = ()) -> Generation:
        return Generation(
            self.text,
            self.finish,
            usage,
            tuple(self.logprobs),
            tuple(self.pieces),
            tuple(self.entropies),
            assists,
        )


class LlamaModel:
    """A `StepGenerator` and `LogprobModel` over llama-cpp-python's `Llama`."""

    features = frozenset({Feature.SAMPLING, Feature.PROPOSAL})  # a proposal: checked in batches (_verify)

    def __init__(self, path: Path, *, name: str, n_ctx: int, threads: int, n_batch: int = 512) -> None:
        hush()  # before llama.cpp says anything: its loader log is not shown, its errors are
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        with errors_of_this_thread() as errors:
            try:
                with model_defaults(use_extra_bufts=extra_buffers()):
                    self._llm: Llama = Llama(
                        model_path=str(path),
                        n_ctx=n_ctx,
                        n_batch=n_batch,
                        n_threads=threads,
                        n_threads_batch=threads,
                        logits_all=False,
                        verbose=False,  # no Python prints; llama.cpp's own log goes to `hush`'s callback
                    )
            except (ValueError, RuntimeError) as exc:
                said = f" (llama.cpp: {'; '.join(errors[-3:])})" if errors else ""
                raise ModelError(
                    f"{path} is not a usable GGUF model (corrupt or truncated?): {exc}{said}"
                ) from None
        for line in errors:  # a load that worked despite them: still worth hearing
            LLAMA_LOG.error("llama.cpp: %s", line)
        llm = self._llm
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise BackendError(f"{path} has no chat template; rsdchat needs an instruct/chat model")
        eos = llm._model.token_get_text(llm.token_eos()) if llm.token_eos() != -1 else ""
        bos = llm._model.token_get_text(llm.token_bos()) if llm.token_bos() != -1 else ""
        self._bos_text = bos
        self._format = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        self._vocab = llm.n_vocab()
        self.lock = threading.Lock()  # one request at a time per model (loop-agnostic)
        self.llm = llm
        self.info = ModelInfo(name=name, n_params=int(llm._model.n_params()), backend="llamacpp")
        self.n_ctx = n_ctx

    # -- the protocols -------------------------------------------------------------

    async def generate(
        self, context: Context, request: StepRequest, on_token: TokenSink | None = None
    ) -> Generation:
        loop = asyncio.get_running_loop()
        cancel = threading.Event()

        def emit(text: str) -> None:
            if on_token is not None and not cancel.is_set():
                loop.call_soon_threadsafe(on_token, text)

        try:
            return await asyncio.to_thread(self._locked, self._generate, context, request, emit, cancel)
        except asyncio.CancelledError:
            cancel.set()
            raise

    async def logprobs(self, context: Context, continuation: str) -> Logprobs:
        cancel = threading.Event()
        try:
            return await asyncio.to_thread(self._locked, self._logprobs, context, continuation, cancel)
        except asyncio.CancelledError:
            cancel.set()
            raise

    async def tag_state(self, context: Context, tag: int) -> tuple[Sequence[float], Usage]:
        """The last hidden state at `tag` read after `context` (`rsdchat_llamacpp.hidden`)."""
        from rsdchat_llamacpp.hidden import read_states

        if not 0 <= tag < self._vocab:
            raise BackendError(f"{self.info.name} has no token {tag} (its vocabulary has {self._vocab})")
        started = time.perf_counter()
        tokens = [*self.tokens(context), tag]
        (state,), read = await asyncio.to_thread(self._locked, read_states, self, tokens, tag, True)
        return state, Usage(read, 0, time.perf_counter() - started)

    def speculative(self, draft: StepGenerator, lookahead: int) -> StepGenerator:
        """This model's greedy steps written faster with `draft`'s proposals (token-level SD)."""
        from rsdchat_llamacpp.speculative import speculative

        return speculative(self, draft, lookahead)

    @property
    def vocab_size(self) -> int:
        return self._vocab

    @property
    def cached(self) -> int:
        """Tokens in the KV cache."""
        return int(self.llm.n_tokens)

    def truncate(self, keep: int) -> None:
        """Drop the cache after its first `keep` tokens."""
        self.llm._ctx.kv_cache_seq_rm(-1, keep, -1)
        self.llm.n_tokens = keep

    def count_tokens(self, context: Context) -> int:
        """Tokens of `context` as this model reads it (chat template included)."""
        return len(self.tokens(context))

    def context_full(self, tokens: int) -> ContextFull:
        """The conversation (`tokens` long) leaves no room in the context: one line saying what to do."""
        return ContextFull(
            f"the conversation ({tokens} tokens) fills the context of {self.info.name} ({self.n_ctx} tokens):"
            " start a new chat or raise n_ctx"
        )

    def close(self) -> None:
        with self.lock:
            self._llm.close()

    # -- work in the worker thread (also used by the speculative decoder) --------------

    def _locked(self, work: Any, *args: Any) -> Any:
        with self.lock:
            try:
                return work(*args)
            except RuntimeError as exc:  # llama_decode failures
                raise BackendError(f"llama.cpp failed on {self.info.name}: {exc}") from None

    def tokens(self, context: Context) -> list[int]:
        messages = [{"role": m.role, "content": m.content} for m in context.messages]
        prompt = self._format(messages=messages).prompt + context.response  # type: ignore[arg-type]
        add_bos = not (self._bos_text and prompt.startswith(self._bos_text))
        return list(self._llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True))

    def decode(self, tokens: list[int], *, all_logits: bool = False) -> list[Logits]:
        """Read `tokens` after the cached ones; return logits (every row, or only the last)."""
        llm = self._llm
        if llm.n_tokens + len(tokens) > self.n_ctx:
            raise self.context_full(llm.n_tokens + len(tokens))
        rows: list[Logits] = []
        for start in range(0, len(tokens), llm.n_batch):
            batch = tokens[start : start + llm.n_batch]
            n_past = llm.n_tokens
            llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=all_logits)
            llm._ctx.decode(llm._batch)
            llm.input_ids[n_past : n_past + len(batch)] = batch
            llm.n_tokens += len(batch)
            if all_logits:
                out = np.ctypeslib.as_array(
                    llm._ctx.get_logits(),  # type: ignore[no-untyped-call]
                    shape=(len(batch) * self._vocab,),
                )
                rows.extend(out.reshape(len(batch), self._vocab).copy())
        if not all_logits and tokens:
            rows.append(np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(self._vocab,)).copy())
        return rows

    def prefill(self, tokens: list[int]) -> tuple[int, Logits]:
        """Make the cache hold exactly `tokens`; return how many were read and the next-token logits."""
        llm = self._llm
        keep = common_prefix(list(llm.input_ids[: llm.n_tokens]), tokens)
        keep = min(keep, len(tokens) - 1)  # re-read the last token to get fresh logits
        self.truncate(keep)
        (logits,) = self.decode(tokens[keep:])
        return len(tokens) - keep, logits

    def _generate(
        self, context: Context, request: StepRequest, emit: TokenSink, cancel: threading.Event
    ) -> Generation:
        started = time.perf_counter()
        prompt = self.tokens(context)
        if len(prompt) >= self.n_ctx:  # not one token left to write
            raise self.context_full(len(prompt))
        read, logits = self.prefill(prompt)
        rng = np.random.default_rng(request.seed)
        writer = StepWriter(self.llm, request.stop, emit)
        budget = min(request.max_tokens, self.n_ctx - len(prompt))
        done = False
        if request.proposal and request.temperature == 0:
            done, logits, refused = self._verify(request.proposal, logits, writer, budget)
            read += refused
        while not done and writer.tokens < budget:
            if cancel.is_set():
                raise Cancelled
            token = sample(logits, request.temperature, request.top_p, rng)
            done = writer.add(token, logits)
            if not done and writer.tokens < budget:
                (logits,) = self.decode([token])
        return writer.generation(Usage(read, writer.tokens, time.perf_counter() - started))

    def _verify(
        self, proposal: str, logits: Logits, writer: StepWriter, budget: int
    ) -> tuple[bool, Logits, int]:
        """Check `proposal` in batches of `VERIFY_CHUNK` tokens and keep the tokens this model would
        have chosen greedily, up to the first it would not.

        Returns whether the step is complete, the logits after the kept tokens, and how many
        proposed tokens were read but refused (they count as prefill).
        """
        ids = list(self.llm.tokenize(proposal.encode("utf-8"), add_bos=False, special=False))[:budget]
        for start in range(0, len(ids), VERIFY_CHUNK):
            chunk = ids[start : start + VERIFY_CHUNK]
            base = self.cached
            predictions = [logits, *self.decode(chunk, all_logits=True)]
            kept = agreed(predictions, chunk)
            for position in range(kept):
                if writer.add(chunk[position], predictions[position]):
                    self.truncate(base + position + 1)
                    return True, predictions[position + 1], len(chunk) - position - 1
            if kept < len(chunk):  # this model writes something else there
                self.truncate(base + kept)
                return False, predictions[kept], len(chunk) - kept
            logits = predictions[len(chunk)]
        return False, logits, 0

    def _logprobs(self, context: Context, continuation: str, cancel: threading.Event) -> Logprobs:
        started = time.perf_counter()
        before = self.tokens(context)
        full = self.tokens(context.extend(continuation))
        start = max(1, common_prefix(before, full))
        if start >= len(full):
            return Logprobs((), Usage(seconds=time.perf_counter() - started))
        prefilled, first = self.prefill(full[:start])
        if cancel.is_set():
            raise Cancelled
        rows = [first, *self.decode(full[start:], all_logits=True)]
        scores = tuple(log_softmax_at(rows[i], token) for i, token in enumerate(full[start:]))
        usage = Usage(prefilled + len(full) - start, 0, time.perf_counter() - started)
        return Logprobs(scores, usage)


def is_eog(llm: Llama, token: int) -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(llm._model.vocab, token))
