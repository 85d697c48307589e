"""The pictures of an eval run (PNG, matplotlib): accuracy against cost, and the δ sweep.

- `accuracy-vs-flops.png`: each method's accuracy against its FLOPs per question (the
  paper's Fig. 4); the runs of an rsd sweep are joined by a line in order of δ.
- `delta-sweep.png`: accuracy and the share of questions the draft answered alone against
  δ (the paper's Fig. 5), with target-only and draft-only as levels to compare with.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rsdchat.core.errors import ConfigError
from rsdchat.evaluation.methods import parse_method
from rsdchat.evaluation.summary import MethodSummary, summarise
from rsdchat.files import Record, write_atomic

PNG = b"\x89PNG\r\n\x1a\n"


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'rsdchat[eval]' (or matplotlib)") from None
    return plt


def _delta(summary: MethodSummary) -> float | None:
    spec = parse_method(summary.method)
    value = spec.settings.get("delta")
    return float(value) if spec.name == "rsd" and value is not None else None


def save_plots(records: Sequence[Record], order: Sequence[str], folder: Path) -> list[Path]:
    """Write the plots into `folder`; return the files written."""
    plt = _pyplot()
    summaries = [s for s in summarise(records, order) if s.n]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {folder}: {exc.strerror or exc}") from None
    saved = [_accuracy_vs_flops(plt, summaries, folder / "accuracy-vs-flops.png")]
    swept = sorted((d, s) for s in summaries if (d := _delta(s)) is not None)
    if len(swept) >= 2:
        saved.append(_delta_sweep(plt, swept, summaries, folder / "delta-sweep.png"))
    return saved


def _is_png(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(PNG)) == PNG
    except OSError:
        return False


def _save(plt: Any, figure: Any, path: Path) -> Path:
    """Write `figure` to `path` whole (a temp file renamed); only a PNG there is replaced."""
    image = io.BytesIO()
    try:
        figure.savefig(image, format="png", dpi=130)
    finally:
        plt.close(figure)
    return write_atomic(path, image.getvalue(), replace=_is_png, what=" and is not a PNG")


def _accuracy_vs_flops(plt: Any, summaries: Sequence[MethodSummary], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    swept = sorted((d, s) for s in summaries if (d := _delta(s)) is not None)
    if len(swept) >= 2:
        axes.plot(
            [s.flops / s.n / 1e12 for _, s in swept],
            [100 * s.accuracy for _, s in swept],
            "-",
            color="0.7",
            zorder=1,
        )
    for number, summary in enumerate(summaries):
        x, y = summary.flops / summary.n / 1e12, 100 * summary.accuracy
        axes.scatter([x], [y], zorder=2)
        offset = (5, 4 if number % 2 == 0 else -11)  # labels of close points alternate above and below
        axes.annotate(summary.method, (x, y), textcoords="offset points", xytext=offset, fontsize=8)
    axes.set_xlabel("TFLOPs per question (all models, prompt tokens included)")
    axes.set_ylabel("accuracy (%)")
    axes.set_title("accuracy against compute")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _save(plt, figure, path)


def _delta_sweep(
    plt: Any, swept: list[tuple[float, MethodSummary]], summaries: Sequence[MethodSummary], path: Path
) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    deltas = [d for d, _ in swept]
    axes.plot(deltas, [100 * s.accuracy for _, s in swept], "o-", label="RSD accuracy")
    axes.plot(
        deltas,
        [100 * s.solved_alone / s.n for _, s in swept],
        "s--",
        label="questions the draft solved alone",
    )
    for name, style in (("target-only", ":"), ("draft-only", "-.")):
        level = next((s for s in summaries if s.method == name), None)
        if level is not None:
            axes.axhline(100 * level.accuracy, linestyle=style, color="0.4", label=f"{name} accuracy")
    axes.set_xlabel("δ (a draft step is kept when its reward ≥ δ)")
    axes.set_ylabel("%")
    axes.set_title("RSD across δ")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _save(plt, figure, path)
