"""How differently the bases of a factorized kernel remember: divergence, table, figure.

Two families of views are compared, layer by layer: ``layer{L}.basis{i}`` (what basis i reads
from the state) and ``layer{L}.h@basis{i}`` (the state when basis i alone drives the
recurrence). Each view's *normalised information curve* is ``r(k) = clip(info_bits(k) /
prior_entropy_bits(k), 0, 1)`` over past offsets ``k >= 0``: the fraction of the input's
entropy at k that the view recovers (the summands of its capacity).

The divergence between two views is the mean absolute difference of their curves,
``mean_k |r_a(k) - r_b(k)|``. It is symmetric, bounded in [0, 1], in the same units as the
curves (fraction of entropy per offset), and sees differences both in how much and in how far
back a basis remembers. Divergences between distributions (KL, Jensen-Shannon) would need the
curves rescaled to unit mass, which drops the "how much" and amplifies probe noise where a
view recovers almost nothing. The same measure between two probe seeds of one view gives the
run-to-run noise that a basis divergence must exceed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from memsig.reports.figures import bases_figure, save_figure
from memsig.reports.tracking import log_report
from memsig.runtime.atomic import write_csv_atomic
from memsig.signature.record import Signature

KEY = "basis_divergence"
MEASURE = "mean_abs_diff"
FAMILIES = {
    "basis": re.compile(r"layer(\d+)\.basis(\d+)"),
    "ablation": re.compile(r"layer(\d+)\.h@basis(\d+)"),
}
TABLE_COLUMNS = ("layer", "family", "view_a", "view_b", "capacity_a", "capacity_b", "divergence")


def normalised_info(signature: Signature, view: str) -> list[float]:
    """``r(k)`` of `view` at the past offsets ``k >= 0``, in the signature's offset order."""
    prior = signature.baseline["prior_entropy_bits"]
    info = signature.views[view].info_bits
    return [
        float(np.clip(i / p, 0.0, 1.0)) if p > 0 else 0.0
        for k, i, p in zip(signature.offsets, info, prior, strict=True)
        if k >= 0
    ]


def curve_divergence(a: Sequence[float], b: Sequence[float]) -> float:
    """Mean absolute difference of two normalised information curves."""
    return float(np.mean(np.abs(np.asarray(a) - np.asarray(b))))


def basis_divergence(signature: Signature) -> dict:
    """``{"basis_divergence": ...}`` to add to signature.json; empty when there are no bases.

    Per layer and family: the views compared, their curves, the pairwise divergence matrix
    and its largest entry.
    """
    groups: dict[str, dict[str, list[str]]] = {}
    for view in signature.views:
        for family, pattern in FAMILIES.items():
            match = pattern.fullmatch(view)
            if match:
                groups.setdefault(f"layer{match[1]}", {}).setdefault(family, []).append(view)
    if not groups:
        return {}
    layers = {}
    for layer, families in sorted(groups.items()):
        layers[layer] = {}
        for family, views in families.items():
            curves = [normalised_info(signature, v) for v in views]
            matrix = [[curve_divergence(a, b) for b in curves] for a in curves]
            layers[layer][family] = {
                "views": views,
                "curves": curves,
                "matrix": matrix,
                "max": max(max(row) for row in matrix),
            }
    return {
        KEY: {
            "measure": MEASURE,
            "offsets": [k for k in signature.offsets if k >= 0],
            "layers": layers,
        }
    }


def table_rows(signature: Signature) -> list[tuple]:
    """One row per layer, family and pair of views (see :data:`TABLE_COLUMNS`)."""
    rows = []
    for layer, families in signature.extra[KEY]["layers"].items():
        for family, record in families.items():
            views, matrix = record["views"], record["matrix"]
            for a in range(len(views)):
                for b in range(a + 1, len(views)):
                    rows.append(
                        (
                            layer,
                            family,
                            views[a],
                            views[b],
                            signature.views[views[a]].capacity,
                            signature.views[views[b]].capacity,
                            matrix[a][b],
                        )
                    )
    return rows


def write_basis_report(signature: Signature, run_dir: Path, loggers: list) -> list[Path]:
    """bases.csv and bases.png in the run dir, sent to the loggers; nothing without bases.
    Returns the files written."""
    if KEY not in signature.extra:
        return []
    rows = table_rows(signature)
    table = Path(run_dir) / "bases.csv"
    write_csv_atomic(table, TABLE_COLUMNS, rows)
    figure = save_figure(bases_figure(signature), Path(run_dir) / "bases.png")
    scalars = {
        f"bases/{layer}/{family}/max_divergence": record["max"]
        for layer, families in signature.extra[KEY]["layers"].items()
        for family, record in families.items()
    }
    log_report(loggers, "bases", scalars, TABLE_COLUMNS, rows, figure)
    return [table, figure]
