"""Steps and rewards remembered by context, so a sweep does not write the same step twice.

Under greedy decoding a step depends only on the context it continues: every δ of a
sweep whose answer reaches the same prefix gets the same draft step, the same reward and
the same target step. `CachedGenerator` and `CachedReward` wrap a model and a reward
source and answer repeated requests from memory. A step from memory is charged what it
cost when it was written (its `Usage` is kept with it), so each run's ledger says what
that run would have cost alone; the time the sweep really took is measured apart.

A step taken from memory leaves the model's KV cache where it was, so the model's next real
step has to read more than it would have in a run alone (the prefix that run would have had
cached). Each question's pipeline (`new_pipeline`) remembers what each model would hold, and
a model that can list its tokens (`Tokenizes`) is charged the prompt tokens a run alone
would have read. The step's seconds stay as measured.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field, replace

from rsdchat.core.protocols import (
    Decides,
    Feature,
    LogprobModel,
    Logprobs,
    RewardSource,
    Score,
    StepGenerator,
    Tokenizes,
    TokenSink,
    features,
)
from rsdchat.core.types import Context, Generation, ModelInfo, StepRequest

# What each cached model would hold in its KV cache in this pipeline run alone: the context
# of its last step there with that step appended. One dict per question's pipeline (a task).
_HELD: ContextVar[dict[int, Context] | None] = ContextVar("rsdchat_cache_held", default=None)


def new_pipeline() -> None:
    """Start a question's pipeline (in its own task): nothing is held for it yet."""
    _HELD.set({})


def read_alone(model: Tokenizes, held: Context, context: Context) -> int:
    """Prompt tokens `model` reads for `context` when its cache holds `held` (the last one is always read)."""
    new, old = model.tokens(context), model.tokens(held)
    common = 0
    for a, b in zip(new, old, strict=False):
        if a != b:
            break
        common += 1
    return len(new) - min(common, len(new) - 1)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


def _context_key(context: Context) -> tuple[object, ...]:
    return (tuple((m.role, m.content) for m in context.messages), context.response)


def _request_key(request: StepRequest) -> tuple[object, ...]:
    sampled = request.temperature > 0
    return (request.stop, request.temperature, request.top_p, request.seed if sampled else None)


@dataclass
class CachedGenerator:
    """A generator that writes each (context, request) once; only greedy steps are remembered."""

    model: StepGenerator
    stats: CacheStats = field(default_factory=CacheStats)
    _steps: dict[tuple[object, ...], tuple[int, Generation]] = field(default_factory=dict)

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    @property
    def features(self) -> frozenset[Feature]:
        return features(self.model)

    async def generate(
        self, context: Context, request: StepRequest, on_token: TokenSink | None = None
    ) -> Generation:
        step = self._remembered(context, request)
        if step is not None:
            self.stats.hits += 1
            if on_token is not None and step.text:
                on_token(step.text)
        else:
            self.stats.misses += 1
            step = await self.model.generate(context, request, on_token)
            if request.temperature == 0:
                self._steps[(_context_key(context), _request_key(request))] = (request.max_tokens, step)
        held = _HELD.get()
        if held is None:
            return step
        before = held.get(id(self))
        held[id(self)] = context.extend(step.text)
        if before is not None and isinstance(self.model, Tokenizes) and not request.proposal:
            alone = read_alone(self.model, before, context)
            step = replace(step, usage=replace(step.usage, prefill_tokens=alone))
        return step

    def _remembered(self, context: Context, request: StepRequest) -> Generation | None:
        """The same greedy step, unless this request's budget would have cut it shorter."""
        known = self._steps.get((_context_key(context), _request_key(request)))
        if known is None or request.temperature > 0:
            return None
        budget, step = known
        fits = step.finish_reason != "length" and step.usage.generated_tokens <= request.max_tokens
        return step if budget == request.max_tokens or fits else None


@dataclass
class CachedLogprobGenerator(CachedGenerator):
    """The same, for a model that can also score text (its scores are not remembered)."""

    async def logprobs(self, context: Context, continuation: str) -> Logprobs:
        assert isinstance(self.model, LogprobModel)
        return await self.model.logprobs(context, continuation)


def cached(model: StepGenerator) -> CachedGenerator:
    """`model` behind a step cache, keeping what it can do."""
    return CachedLogprobGenerator(model) if isinstance(model, LogprobModel) else CachedGenerator(model)


@dataclass
class CachedReward:
    """A reward source that scores each (context, step text) once."""

    source: RewardSource
    stats: CacheStats = field(default_factory=CacheStats)
    _scores: dict[tuple[object, ...], Score] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = self.source.name
        self.kind = self.source.kind
        self.default_delta = self.source.default_delta
        self.bounds = self.source.bounds
        self.n_params = self.source.n_params
        if isinstance(self.source, Decides):  # the cascade: its band is checked on the cached source too
            self.decision_band = self.source.decision_band

    async def score(self, context: Context, step: Generation) -> Score:
        key = (_context_key(context), step.text)
        known = self._scores.get(key)
        if known is not None:
            self.stats.hits += 1
            return known
        self.stats.misses += 1
        score = await self.source.score(context, step)
        self._scores[key] = score
        return score

    async def aclose(self) -> None:
        await self.source.aclose()
