"""Throwaway multi-part models for the model cache's tests: tiny distributions on sys.path, as
the packages that ship the embedded models are, and an `EmbeddedModel` over their parts."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from rsdchat_llamacpp.embedded import EmbeddedModel

# Part sizes straddle the 1 MiB chunk size; the content starts with the GGUF magic.
PART_DATA = [b"GGUF" + os.urandom((1 << 20) + 1234), os.urandom(700_000), b"xyz"]
WHOLE = b"".join(PART_DATA)

MakeModel = Callable[..., EmbeddedModel]


def install_parts(root: Path, parts: list[bytes], prefix: str = "fake") -> None:
    """Distributions `{prefix}-part1`… under `root`, each holding its part as `data/partNN.bin`."""
    for n, data in enumerate(parts, 1):
        info = root / f"{prefix}_part{n}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {prefix}-part{n}\nVersion: 1.0\n")
        (root / f"{prefix}_part{n}" / "data").mkdir(parents=True)
        (root / f"{prefix}_part{n}" / "data" / f"part{n:02d}.bin").write_bytes(data)


def model_over(data_parts: list[bytes], prefix: str = "fake", **kw: object) -> EmbeddedModel:
    """An EmbeddedModel over the distributions `install_parts` made (overridable fields)."""
    dists = [f"{prefix}-part{n}" for n in range(1, len(data_parts) + 1)]
    data = b"".join(data_parts)
    packages = tuple(f"{d}==1.0" for d in dists)
    fields: dict[str, object] = {
        "key": "fake",
        "title": "Fake",
        "packages": packages,
        "parts": tuple((d, f"{prefix}_part{n}/data/part{n:02d}.bin") for n, d in enumerate(dists, 1)),
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "install_hint": "python -m pip install " + " ".join(packages),
    }
    fields.update(kw)
    return EmbeddedModel(**fields)  # type: ignore[arg-type]


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "models").iterdir() if p.name.startswith("."))
