"""Steps and rewards remembered by context, so a sweep does not write the same step twice.

Under greedy decoding a step depends only on the context it continues: every δ of a
sweep whose answer reaches the same prefix gets the same draft step, the same reward and
the same target step. `CachedGenerator` and `CachedReward` wrap a model and a reward
source and answer repeated requests from memory. A step from memory is charged what it
cost when it was written (its `Usage` is kept with it), so each run's ledger says what
that run would have cost alone; the time the sweep really took is measured apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rsdchat.protocols import LogprobModel, Logprobs, RewardSource, Score, StepGenerator, TokenSink
from rsdchat.types import Context, Generation, ModelInfo, StepRequest


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

    async def generate(
        self, context: Context, request: StepRequest, on_token: TokenSink | None = None
    ) -> Generation:
        key = (_context_key(context), _request_key(request))
        known = self._steps.get(key) if request.temperature == 0 else None
        if known is not None:
            budget, step = known
            # the same greedy step, unless this request's budget would have cut it shorter
            fits = step.finish_reason != "length" and step.usage.generated_tokens <= request.max_tokens
            if budget == request.max_tokens or fits:
                self.stats.hits += 1
                if on_token is not None and step.text:
                    on_token(step.text)
                return step
        self.stats.misses += 1
        step = await self.model.generate(context, request, on_token)
        if request.temperature == 0:
            self._steps[key] = (request.max_tokens, step)
        return step


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
