"""Figures (matplotlib, Agg backend): accuracy and information against offset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from memsig.runtime.atomic import write_atomic  # noqa: E402
from memsig.signature.record import Signature  # noqa: E402

LINE = 80  # characters per line in a character-level figure


def signature_figure(signature: Signature, title: str | None = None) -> plt.Figure:
    """Two panels, one line per view: accuracy (majority baseline dashed) and information
    (prior entropy dashed: the maximum, all a view could recover; a probe that reads nothing
    scores zero, not this line). Both panels have legends. With the optional records, each
    view's bootstrap interval is a band, its control-task accuracy a dotted line, its
    untrained twin a dash-dotted line, in the view's colour, and with `probe.condition_on` the
    memory beyond the inputs still in view dotted."""
    fig, (acc_ax, info_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    offsets = signature.offsets
    order = sorted(range(len(offsets)), key=lambda i: offsets[i])
    xs = [offsets[i] for i in order]
    extra = signature.extra
    bands = extra.get("intervals", {}).get("views", {})
    control = extra.get("control", {}).get("views", {})
    untrained = extra.get("untrained", {}).get("views", {})
    for view, scores in signature.views.items():
        (line,) = acc_ax.plot(xs, [scores.accuracy[i] for i in order], marker="o", ms=3, label=view)
        info_ax.plot(xs, [scores.info_bits[i] for i in order], marker="o", ms=3, label=view)
        colour = line.get_color()
        for ax, metric in ((acc_ax, "accuracy"), (info_ax, "info_bits")):
            if view in bands:
                lo, hi = bands[view][f"{metric}_lo"], bands[view][f"{metric}_hi"]
                ax.fill_between(
                    xs, [lo[i] for i in order], [hi[i] for i in order], color=colour, alpha=0.2
                )
            if view in untrained:
                values = untrained[view][metric]
                ax.plot(
                    xs,
                    [values[i] for i in order],
                    "-.",
                    color=colour,
                    lw=1,
                    label=f"{view} untrained" if ax is info_ax else None,
                )
        if view in control:
            values = control[view]["accuracy"]
            acc_ax.plot(
                xs, [values[i] for i in order], ":", color=colour, lw=1.2, label=f"{view} control"
            )
    for m, ref in signature.extra.get("local_context", {}).items():
        label = f"last {m} chars"  # the local-context reference: what a window alone reveals
        acc_ax.plot(xs, [ref["accuracy"][i] for i in order], "--", lw=1.2, label=label)
        info_ax.plot(xs, [ref["info_bits"][i] for i in order], "--", lw=1.2, label=label)
    conditional = signature.extra.get("conditional_memory")
    if conditional is not None:  # memory beyond the last m inputs, dotted
        m = conditional["condition_on"]
        for view, record in conditional["views"].items():
            beyond = [record["beyond_bits"][i] for i in order]
            info_ax.plot(xs, beyond, ":", marker="^", ms=3, label=f"{view} beyond last {m}")
    baseline = signature.baseline
    acc_ax.plot(
        xs, [baseline["majority_accuracy"][i] for i in order], "k--", lw=1, label="majority"
    )
    info_ax.plot(
        xs,
        [baseline["prior_entropy_bits"][i] for i in order],
        "k--",
        lw=1,
        label="prior entropy (the maximum)",
    )
    if bands:  # one legend entry for every view's band
        level = round(100 * extra["intervals"]["level"])
        for ax in (acc_ax, info_ax):
            ax.fill_between([], [], [], color="grey", alpha=0.2, label=f"{level}% interval")
    xlabel = f"offset k ({signature.data.get('unit', 'step')}s back; < 0 ahead)"
    acc_ax.set(xlabel=xlabel, ylabel="probe accuracy", ylim=(0, 1.02))
    info_ax.set(xlabel=xlabel, ylabel="information (bits)")
    info_ax.set_ylim(bottom=min(0.0, info_ax.get_ylim()[0]))
    for ax in (acc_ax, info_ax):
        ax.grid(alpha=0.3)
    info_ax.legend(fontsize=8, loc="best")
    acc_ax.legend(fontsize=7, loc="best")
    model, data = signature.model, signature.data
    fig.suptitle(title or f"memory signature: {model.get('name')} on {data.get('name')}")
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Save atomically as PNG and close the figure."""
    write_atomic(Path(path), lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return Path(path)


def bases_figure(signature: Signature) -> plt.Figure:
    """The bases side by side, one row per layer: for each family (basis reads, single-basis
    ablations) the normalised information curves and their pairwise divergence matrix."""
    record = signature.extra["basis_divergence"]
    offsets, layers = record["offsets"], record["layers"]
    columns = max(len(families) for families in layers.values()) * 2
    fig, axes = plt.subplots(
        len(layers), columns, figsize=(4.2 * columns, 3.4 * len(layers)), squeeze=False
    )
    for row, (layer, families) in enumerate(layers.items()):
        for col, (family, entry) in enumerate(families.items()):
            curve_ax, matrix_ax = axes[row, 2 * col], axes[row, 2 * col + 1]
            for view, curve in zip(entry["views"], entry["curves"], strict=True):
                curve_ax.plot(offsets, curve, marker="o", ms=3, label=view)
            curve_ax.set(
                title=f"{layer} {family}",
                xlabel="offset k (steps back)",
                ylabel="info / prior entropy",
                ylim=(0, 1.02),
            )
            curve_ax.grid(alpha=0.3)
            curve_ax.legend(fontsize=7)
            image = matrix_ax.imshow(entry["matrix"], cmap="viridis", vmin=0)
            labels = [view.split(".", 1)[1] for view in entry["views"]]
            matrix_ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=7)
            matrix_ax.set_yticks(range(len(labels)), labels, fontsize=7)
            matrix_ax.set_title(f"{layer} {family}: {record['measure']}", fontsize=9)
            fig.colorbar(image, ax=matrix_ax, fraction=0.046)
        for col in range(2 * len(families), columns):
            axes[row, col].axis("off")
    fig.suptitle(f"kernel bases: {signature.model.get('name')} on {signature.data.get('name')}")
    fig.tight_layout()
    return fig


def chars_figure(chars: Sequence[str], offsets: Sequence[int], sides: Sequence) -> plt.Figure:
    """A passage in rows of offsets, a column per run (`sides`: objects with `label` and
    `recall` [offsets, passage]); each character shaded by its recall (Blues)."""
    lines = -(-len(chars) // LINE)
    fig, axes = plt.subplots(
        len(offsets),
        len(sides),
        figsize=(len(sides) * LINE * 0.085, len(offsets) * (0.18 * lines + 0.35)),
        squeeze=False,
    )
    for column, side in enumerate(sides):
        for row, k in enumerate(offsets):
            ax = axes[row, column]
            grid = np.full(lines * LINE, np.nan)
            grid[: len(chars)] = side.recall[row, : len(chars)]
            ax.imshow(grid.reshape(lines, LINE), cmap="Blues", vmin=0, vmax=1, aspect="auto")
            for i, ch in enumerate(chars):
                shown = "\u21b5" if ch == "\n" else ch
                ax.text(
                    i % LINE,
                    i // LINE,
                    shown,
                    ha="center",
                    va="center",
                    fontsize=6,
                    family="monospace",
                    color="white" if grid[i] > 0.6 else "black",
                )
            ax.set(xticks=[], yticks=[])
            ax.set_ylabel(f"k={k}", rotation=0, ha="right", va="center", fontsize=8)
            if row == 0:
                ax.set_title(side.label, fontsize=9)
    fig.suptitle("probability the probe at step p+k gives the character at p", fontsize=10)
    fig.tight_layout()
    return fig


def training_heatmap(steps: Sequence[int], offsets: Sequence[int], info: dict) -> plt.Figure:
    """One panel per view: information (bits) by training step (rows) x offset (columns)."""
    order = sorted(range(len(offsets)), key=lambda i: offsets[i])
    fig, axes = plt.subplots(
        1, len(info), figsize=(4.2 * len(info), 0.3 * len(steps) + 2.2), squeeze=False
    )
    for ax, (view, grid) in zip(axes[0], info.items(), strict=True):
        image = ax.imshow(np.asarray(grid)[:, order], aspect="auto", cmap="viridis", vmin=0)
        ax.set_xticks(range(len(order)), [offsets[i] for i in order], fontsize=7)
        ax.set_yticks(range(len(steps)), list(steps), fontsize=7)
        ax.set(title=view, xlabel="offset k", ylabel="training step")
        fig.colorbar(image, ax=ax, fraction=0.046, label="information (bits)")
    fig.suptitle("memory forming during training")
    fig.tight_layout()
    return fig


ANNOTATED_OFFSETS = 16  # heatmap cells carry their value up to this many offsets (then unreadable)


def layer_heatmap_figure(signature: Signature, views: Sequence[str]) -> plt.Figure:
    """Views (rows, input to output) x offsets (columns): probe accuracy and information."""
    offsets = signature.offsets
    order = sorted(range(len(offsets)), key=lambda i: offsets[i])
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(views) + 2.2))
    for ax, metric, label in (
        (axes[0], "accuracy", "probe accuracy"),
        (axes[1], "info_bits", "information (bits)"),
    ):
        grid = np.array([[getattr(signature.views[v], metric)[i] for i in order] for v in views])
        image = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=min(0.0, grid.min()))
        for (row, col), value in np.ndenumerate(grid if len(order) <= ANNOTATED_OFFSETS else []):
            shade = "black" if value > grid.max() * 0.6 else "white"
            ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color=shade)
        ax.set_xticks(range(len(order)), [offsets[i] for i in order])
        ax.set_yticks(range(len(views)), views)
        ax.set(xlabel=f"offset k ({signature.data.get('unit')}s back; < 0 ahead)", title=label)
        fig.colorbar(image, ax=ax, fraction=0.046)
    model, data = signature.model, signature.data
    fig.suptitle(f"history by layer: {model.get('name')} on {data.get('name')}")
    fig.tight_layout()
    return fig


def layer_curves_figure(signature: Signature, views: Sequence[str]) -> plt.Figure:
    """The signature figure restricted to `views` (one curve per layer)."""
    subset = replace(signature, views={v: signature.views[v] for v in views}, extra={})
    model, data = signature.model, signature.data
    return signature_figure(subset, f"per-layer curves: {model.get('name')} on {data.get('name')}")


def sweep_figure(rows: Sequence[Sequence], offsets: Sequence[int], title: str) -> plt.Figure:
    """Overlay of a sweep's groups: accuracy and information against offset, one line per
    group and view (mean over seeds), the 95% interval shaded where there are several seeds.
    `rows` are memsig.commands.compare_sweep.COLUMNS rows."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = sorted(offsets)
    for ax, metric, ylabel in zip(
        axes, ("accuracy", "info_bits"), ("probe accuracy", "information (bits)"), strict=True
    ):
        lines: dict[tuple[str, str], dict[int, tuple]] = {}
        for group, view, k, name, _n, mean, low, high in rows:
            if name == metric:
                lines.setdefault((group, view), {})[k] = (mean, low, high)
        for (group, view), points in lines.items():
            mean, low, high = (np.array([points[k][j] for k in xs]) for j in range(3))
            (line,) = ax.plot(xs, mean, marker="o", ms=3, label=f"{group} {view}")
            if np.isfinite(low).all():
                ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2)
        ax.set(xlabel="offset k (steps back; < 0 ahead)", ylabel=ylabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, 1.02)
    axes[1].legend(fontsize=7, loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
