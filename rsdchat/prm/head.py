"""The reward head: Qwen2.5-Math-PRM's `score` module, applied to one hidden state.

    logits = W2 · ReLU(W1 · h + b1) + b2        P(step is good) = softmax(logits)[1]

`h` is the backbone's last hidden state (after its final norm) at the step tag that follows
the step. A head with k < H hidden units is kept compact; in a checkpoint, W1 is padded with
zero rows to H × H (ReLU(0) = 0, so the padded head computes exactly the same thing).

The file is safetensors holding `score.0.weight` (k × H), `score.0.bias`, `score.2.weight`
(2 × k) and `score.2.bias`, the names of the checkpoint, and a metadata entry `rsdchat`
(JSON): what the head is for (the model, its hidden size, the step tag), what it was trained
on, and its measured AUC.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rsdchat.core.errors import ConfigError
from rsdchat.prm import safetensors

Array = npt.NDArray[np.float32]
FORMAT = "rsdchat-prm-head-1"
STEP_TAG, STEP_TAG_ID = "<extra_0>", 151651  # Qwen2.5-Math-PRM's step tag (Qwen2.5 vocabulary)
NAMES = ("score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias")


@dataclass(frozen=True)
class PrmHead:
    w1: Array  # (k, H)
    b1: Array  # (k,)
    w2: Array  # (2, k)
    b2: Array  # (2,)
    about: dict[str, Any] = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return int(self.w1.shape[1])

    def logit(self, hidden: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        """log P(good) − log P(bad) for each row of `hidden` (…, H)."""
        x = np.asarray(hidden, dtype=np.float64)
        inner = np.maximum(x @ self.w1.T.astype(np.float64) + self.b1, 0.0)
        logits = inner @ self.w2.T.astype(np.float64) + self.b2
        return np.asarray(logits[..., 1] - logits[..., 0])

    def p_good(self, hidden: npt.NDArray[Any]) -> float:
        z = float(self.logit(hidden.reshape(1, -1))[0])
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def tensors(self, pad_to: int | None = None) -> dict[str, Array]:
        """The four `score` tensors; with `pad_to`, W1 padded to pad_to × H as a checkpoint holds it."""
        w1, b1, w2 = self.w1, self.b1, self.w2
        if pad_to is not None and pad_to > len(w1):
            extra = pad_to - len(w1)
            w1 = np.vstack([w1, np.zeros((extra, w1.shape[1]), np.float32)])
            b1 = np.concatenate([b1, np.zeros(extra, np.float32)])
            w2 = np.hstack([w2, np.zeros((2, extra), np.float32)])
        return dict(zip(NAMES, (w1, b1, w2, self.b2), strict=True))

    def save(self, path: Path) -> None:
        safetensors.save(path, self.tensors(), {"rsdchat": json.dumps({"format": FORMAT, **self.about})})

    @classmethod
    def load(cls, path: Path) -> PrmHead:
        """A head file; a missing, corrupt or foreign file is one ConfigError naming it."""
        try:
            tensors, metadata = safetensors.load(path)
        except OSError as exc:
            raise ConfigError(f"PRM head {path} cannot be read ({exc.strerror or exc})") from None
        except safetensors.SafetensorsError as exc:
            raise ConfigError(f"PRM head {exc}") from None
        try:
            about = json.loads(metadata.get("rsdchat", "{}"))
            if about.get("format") != FORMAT:
                raise ValueError(f"format {about.get('format')!r}, this rsdchat reads {FORMAT}")
            w1, b1, w2, b2 = (tensors[name].astype(np.float32) for name in NAMES)
            k = w1.shape[0]
            if b1.shape != (k,) or w2.shape != (2, k) or b2.shape != (2,):
                raise ValueError("the score tensors' shapes do not fit together")
            if not all(np.isfinite(t).all() for t in (w1, b1, w2, b2)):
                raise ValueError("a weight is not a finite number")
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise ConfigError(f"PRM head {path} is not a head rsdchat wrote ({exc})") from None
        about.pop("format")
        return cls(w1, b1, w2, b2, about)


def probe_head(
    weights: npt.NDArray[Any],
    bias: float,
    mean: npt.NDArray[Any],
    scale: npt.NDArray[Any],
    about: dict[str, Any],
) -> PrmHead:
    """A linear probe z = w · (h − mean)/scale + bias as the two-class ReLU head.

    With s = w'·h + c: ReLU(s) − ReLU(−s) = s, so W1 = [w'; −w'], b1 = [c; −c] and the
    positive class's row of W2 is [1, −1]: P(good) = sigmoid(s), exactly.
    """
    w = (np.asarray(weights, np.float64) / scale).astype(np.float64)
    c = float(bias - w @ mean)
    w1 = np.vstack([w, -w]).astype(np.float32)
    b1 = np.array([c, -c], np.float32)
    w2 = np.array([[0.0, 0.0], [1.0, -1.0]], np.float32)
    return PrmHead(w1, b1, w2, np.zeros(2, np.float32), about)
