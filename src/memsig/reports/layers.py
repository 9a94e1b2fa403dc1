"""How history is spread over a model's layers: layers.csv, a layer x offset heatmap
(layers.png) and per-layer curves (layer_curves.png), written and sent to the loggers."""

from __future__ import annotations

import re
from pathlib import Path

from memsig.reports.figures import layer_curves_figure, layer_heatmap_figure, save_figure
from memsig.reports.tracking import log_report
from memsig.runtime.atomic import write_csv_atomic
from memsig.signature.record import Signature

TABLE_COLUMNS = ("view", "offset", "accuracy", "info_bits")
LAYER_VIEW = re.compile(r"layer(\d+)\.[hc]$")


def layer_views(signature: Signature) -> list[str]:
    """input, layer1.h, layer1.c, layer2.h, ..., then logits (those the signature has)."""
    layered = sorted(
        (v for v in signature.views if LAYER_VIEW.match(v)),
        key=lambda v: (int(LAYER_VIEW.match(v).group(1)), v.endswith(".c")),
    )
    first = ["input"] if "input" in signature.views else []
    last = ["logits"] if "logits" in signature.views else []
    return [*first, *layered, *last]


def write_layer_report(signature: Signature, run_dir: Path, loggers: list) -> list[Path]:
    """The layer report of a model with two or more layers (nothing otherwise)."""
    views = layer_views(signature)
    layers = {LAYER_VIEW.match(v).group(1) for v in views if LAYER_VIEW.match(v)}
    if len(layers) < 2:
        return []
    rows = [
        (v, k, signature.views[v].accuracy[i], signature.views[v].info_bits[i])
        for v in views
        for i, k in enumerate(signature.offsets)
    ]
    table = Path(run_dir) / "layers.csv"
    write_csv_atomic(table, TABLE_COLUMNS, rows)
    heatmap = save_figure(layer_heatmap_figure(signature, views), Path(run_dir) / "layers.png")
    hidden = [v for v in views if v.endswith(".h")]
    curves = save_figure(layer_curves_figure(signature, hidden), Path(run_dir) / "layer_curves.png")
    scalars = {f"layers/{v}/capacity": signature.views[v].capacity for v in views}
    log_report(loggers, "layers", scalars, TABLE_COLUMNS, rows, heatmap)
    log_report(loggers, "layer_curves", {}, TABLE_COLUMNS, [], curves)  # its numbers: layers/table
    return [table, heatmap, curves]
