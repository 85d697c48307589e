"""`draft-prm`: a process reward head trained for the draft, run on the draft's own hidden state.

At the end of each step the draft reads one more token, Qwen2.5-Math-PRM's step tag, and
the head (`rsdchat.prm.head`) turns the draft's hidden state there into P(step is good).
The draft has just read the step, so a score costs about one draft token and no second
model. The head that ships was trained for the embedded draft (Qwen2.5-Coder-0.5B) on
GSM8K train by `rsdchat train-prm`; `prm_head` (`[backends.llamacpp]`) points at another.
The same head, in a Qwen2ForProcessRewardModel checkpoint, is what vLLM serves for
`qwen-prm` (`rsdchat train-prm --backbone`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np

from rsdchat.plugin_api import (
    STEP_TAG_ID,
    ConfigError,
    Context,
    Generation,
    PrmHead,
    ReadsStates,
    RewardContext,
    RewardPlugin,
    Score,
)
from rsdchat_llamacpp.plugin import LlamaCppConfig

HEAD_FILE = "draft-prm.safetensors"


def shipped_head() -> Path:
    return Path(str(resources.files("rsdchat_llamacpp") / "data" / HEAD_FILE))


def load_head(path: Path) -> PrmHead:
    """The head file at `path`, read again when it changed (train-prm may rewrite it meanwhile)."""
    try:
        changed = path.stat().st_mtime_ns
    except OSError:
        changed = 0  # PrmHead.load says what is wrong, in one line
    return _load_head(path, changed)


@cache
def _load_head(path: Path, changed: int) -> PrmHead:
    return PrmHead.load(path)


@dataclass
class DraftPRM:
    """r = P(step is good) from the head on the draft's hidden state at the step tag."""

    model: ReadsStates
    head: PrmHead
    n_params: int
    name: str = "draft-prm"
    kind: Literal["process", "outcome"] = "process"
    bounds: tuple[float, float] | None = (0.0, 1.0)
    default_delta: float = 0.5

    def __post_init__(self) -> None:
        self.default_delta = float(self.head.about.get("default_delta", 0.5))

    async def score(self, context: Context, step: Generation) -> Score:
        started = time.perf_counter()
        state, usage = await self.model.tag_state(context.extend(step.text), STEP_TAG_ID)
        reward = self.head.p_good(np.asarray(state, dtype=np.float32))
        return Score(reward, dataclasses.replace(usage, seconds=time.perf_counter() - started))

    async def aclose(self) -> None:
        return None


def create(context: RewardContext) -> DraftPRM:
    draft = context.need("draft", "draft-prm")
    if not isinstance(draft, ReadsStates):
        raise ConfigError(
            f"reward draft-prm reads the draft's hidden states in process: it needs the draft on the "
            f"llamacpp backend (this draft runs on {draft.info.backend})"
        )
    if getattr(draft, "vocab_size", STEP_TAG_ID + 1) <= STEP_TAG_ID:
        raise ConfigError(
            f"reward draft-prm reads a hidden state at Qwen2.5's step tag (token {STEP_TAG_ID}), which the "
            f"draft {draft.info.name} does not have: it needs a Qwen2/2.5 draft"
        )
    path = context.config("llamacpp", LlamaCppConfig).prm_head or shipped_head()
    head = load_head(path)
    trained_for = head.about.get("n_params")
    if trained_for != draft.info.n_params:
        raise ConfigError(
            f"PRM head {path} was trained for {head.about.get('model', 'another model')} "
            f"({trained_for} parameters), not the draft {draft.info.name} ({draft.info.n_params}): "
            "train one for it with `rsdchat train-prm`"
        )
    return DraftPRM(draft, head, draft.info.n_params)


def _describe() -> str:
    try:
        about = load_head(shipped_head()).about
    except ConfigError:
        return "a process reward head trained for the draft (its head file is missing)"
    auc = about.get("cv_auc")
    by = "its answers" if about.get("labels") == "outcome-v1" else "the target"
    shown = f", AUC {auc:.2f} out of fold on labels by {by}" if isinstance(auc, int | float) else ""
    return f"a process reward head trained for the draft {about.get('model', '')}, on its hidden state{shown}"


DRAFT_PRM = RewardPlugin("draft-prm", _describe(), create, cost="draft (one token per step)")
