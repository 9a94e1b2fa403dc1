"""Figures (matplotlib, Agg backend): accuracy and information against offset."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from memsig.atomic import write_atomic  # noqa: E402
from memsig.signature import Signature  # noqa: E402


def signature_figure(signature: Signature, title: str | None = None) -> plt.Figure:
    """Two panels, one line per view: accuracy (majority baseline dashed) and information
    (prior entropy dashed: the most a view could recover)."""
    fig, (acc_ax, info_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    offsets = signature.offsets
    order = sorted(range(len(offsets)), key=lambda i: offsets[i])
    xs = [offsets[i] for i in order]
    for view, scores in signature.views.items():
        acc_ax.plot(xs, [scores.accuracy[i] for i in order], marker="o", ms=3, label=view)
        info_ax.plot(xs, [scores.info_bits[i] for i in order], marker="o", ms=3, label=view)
    baseline = signature.baseline
    acc_ax.plot(
        xs, [baseline["majority_accuracy"][i] for i in order], "k--", lw=1, label="majority"
    )
    info_ax.plot(
        xs, [baseline["prior_entropy_bits"][i] for i in order], "k--", lw=1, label="prior entropy"
    )
    acc_ax.set(xlabel="offset k (steps back; < 0 ahead)", ylabel="probe accuracy", ylim=(0, 1.02))
    info_ax.set(xlabel="offset k (steps back; < 0 ahead)", ylabel="information (bits)")
    info_ax.set_ylim(bottom=min(0.0, info_ax.get_ylim()[0]))
    for ax in (acc_ax, info_ax):
        ax.grid(alpha=0.3)
    info_ax.legend(fontsize=8, loc="upper right")
    model, data = signature.model, signature.data
    fig.suptitle(title or f"memory signature: {model.get('name')} on {data.get('name')}")
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Save atomically as PNG and close the figure."""
    write_atomic(Path(path), lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return Path(path)
