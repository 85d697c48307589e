"""The small interfaces the core knows backends and reward sources by.

Split by capability: every backend can continue text up to a step (`StepGenerator`);
some can also say how likely a given text is (`LogprobModel`), which the
log-probability rewards and the likelihood-ratio weightings need. Black-box
endpoints need not offer it. What a step request may ask beyond a greedy step
(sampling, a proposal to check) a generator declares in `features` (`Declares`);
`Engine.check` refuses a policy that asks a generator for more than it declares.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from rsdchat.core.types import Context, Generation, ModelInfo, Role, StepRequest, Usage

TokenSink = Callable[[str], None]


@runtime_checkable
class StepGenerator(Protocol):
    """A model that continues a context and stops at the end of one step."""

    @property
    def info(self) -> ModelInfo: ...

    async def generate(
        self, context: Context, request: StepRequest, on_token: TokenSink | None = None
    ) -> Generation:
        """Write one step; call `on_token` with each piece of text as it is produced.

        Raises `rsdchat.core.errors.BackendError` on failure. Cancelling the awaiting task
        stops the generation.
        """
        ...


class Feature(str, enum.Enum):
    """What a `StepRequest` may ask of a generator beyond writing one greedy step."""

    SAMPLING = "sampling"  # temperature > 0 (with top_p and the seed)
    PROPOSAL = "proposal"  # `StepRequest.proposal`: checked greedily, the part it would write itself kept


PLAIN: frozenset[Feature] = frozenset({Feature.SAMPLING})
"""What a generator that declares nothing honours: greedy and sampled steps, no proposal."""


@runtime_checkable
class Declares(Protocol):
    """A generator that says which request features it honours (any other is refused, not ignored)."""

    @property
    def features(self) -> frozenset[Feature]: ...


def features(model: StepGenerator) -> frozenset[Feature]:
    """The request features `model` honours: its declaration, else `PLAIN`."""
    return model.features if isinstance(model, Declares) else PLAIN


@dataclass
class Logprobs:
    """Log-probabilities of a continuation's tokens, with the work it took."""

    token_logprobs: tuple[float, ...]
    usage: Usage = field(default_factory=Usage)

    @property
    def mean(self) -> float:
        if not self.token_logprobs:
            return 0.0
        return sum(self.token_logprobs) / len(self.token_logprobs)


@runtime_checkable
class LogprobModel(Protocol):
    """A model that can score a given continuation token by token."""

    async def logprobs(self, context: Context, continuation: str) -> Logprobs:
        """log P(token) for each token of `continuation` after `context`."""
        ...


@runtime_checkable
class ReadsStates(Protocol):
    """A model that gives its last hidden state at a step tag read after a context.

    `tag_state(context, tag)`: the model reads `context` (its cache reused) and then the
    token `tag`, and returns the final-norm hidden state there (a process reward head's
    input) with what reading cost; the tag does not stay in its cache.
    """

    async def tag_state(self, context: Context, tag: int) -> tuple[Sequence[float], Usage]: ...


@runtime_checkable
class Tokenizes(Protocol):
    """A model that can list the tokens it reads for a context (its prompt, rendered)."""

    def tokens(self, context: Context) -> list[int]: ...


@runtime_checkable
class Speculates(Protocol):
    """A model that writes its own greedy steps faster with a smaller model's token proposals.

    Token-level speculative decoding: the draft proposes `lookahead` tokens, the model
    checks them in one batch and keeps the longest prefix it would have written itself,
    so the text is its own (up to the backend's batch-vs-single numerics).
    """

    def speculative(self, draft: StepGenerator, lookahead: int) -> StepGenerator: ...


class Backend(Protocol):
    """An engine (llama.cpp, an HTTP server, vLLM) that hands out generators per role.

    Plugins declare one in the entry-point group `rsdchat.backends` (see `rsdchat.plugins`).
    """

    def generator(self, role: Role, model: str) -> StepGenerator:
        """The generator for `role`, loading `model` (a name or a path) if needed.

        May block (loading weights, asking a server): callers run it off the event loop.
        """
        ...

    async def aclose(self) -> None:
        """Release the models and connections."""
        ...


@runtime_checkable
class Releases(Protocol):
    """A backend that can let one of its models go and keep the others (optional: the model
    that the chat's `/model` replaced is released; else it stays loaded until `aclose`)."""

    async def release_model(self, model: StepGenerator) -> None: ...


@runtime_checkable
class ListsModels(Protocol):
    """A backend that can say which model names it knows, besides paths (optional: `/model` shows them)."""

    def model_names(self) -> Sequence[str]: ...


@runtime_checkable
class ServesStates(Protocol):
    """A backend whose draft's hidden states are read on a server of their own (optional:
    `rsdchat train-prm` uses it where the draft itself cannot give them)."""

    def states(self, model: str) -> ReadsStates:
        """A reader of `model`'s hidden states, or a ConfigError naming the setting that is missing.

        May block (asking a server): callers run it off the event loop.
        """
        ...


@dataclass
class Score:
    """One reward for one step."""

    reward: float
    usage: Usage = field(default_factory=Usage)  # charged to the reward role
    target_logprob: float | None = None  # mean log P_M of the step, when it was computed anyway
    detail: str = ""  # a short human explanation, e.g. "2 of 3 equations wrong"
    decided_by: str = ""  # the part of a composite source that settled it (a cascade's stage)


@runtime_checkable
class RewardSource(Protocol):
    """Scores a step given the context it continues: r(y_i | x, y_<i)."""

    name: str
    kind: Literal["process", "outcome"]  # outcome: scores the whole response so far (ORM mode)
    default_delta: float  # threshold that suits this source's scale
    bounds: tuple[float, float] | None  # the rewards it can give ([0, 1] for a PRM); None: unbounded
    n_params: int  # parameters of the model that scores (0 for a model-free check), for FLOPs

    async def score(self, context: Context, step: Generation) -> Score: ...

    async def aclose(self) -> None:
        """Release connections (a no-op for sources computed in process)."""
        ...


@runtime_checkable
class Decides(Protocol):
    """A reward source that makes its own keep-or-reject decision and gives rewards that say it.

    Its rewards are meant for the binary ω alone, with δ in `decision_band` = (low, high] (a
    band with low = high means δ = low): with any such δ, ω keeps exactly the steps it keeps.
    Under another ω or δ its rewards would be read as something they are not (graded scores),
    so `Engine.check` refuses them.
    """

    @property
    def decision_band(self) -> tuple[float, float]: ...
