"""What tells memory from probe artefacts and noise: control-task selectivity, bootstrap
intervals over probe-test documents, and each view's summary numbers (see Signature's
docstring for the keys they fill)."""

from __future__ import annotations

import numpy as np
import torch

from memsig.probes.bootstrap import percentile_interval, resample_weights, resampled_means
from memsig.signature import Signature, capacity, half_life, json_number
from memsig.units import nats_to_bits


def control_record(
    signature: Signature,
    labels: np.ndarray,
    control: dict[str, torch.Tensor],
    control_majority: np.ndarray,
) -> dict:
    """Control accuracy and selectivity (accuracy - control accuracy) per view x offset, and
    selectivity above chance: each accuracy less its majority baseline first, so features that
    hold nothing score zero whatever the two tasks' chance levels."""
    chance_gap = np.asarray(signature.baseline["majority_accuracy"]) - control_majority
    views = {}
    for i, (view, scores) in enumerate(signature.views.items()):
        accuracy = control["accuracy"][i].numpy()
        selectivity = np.asarray(scores.accuracy) - accuracy
        views[view] = {
            "accuracy": accuracy.tolist(),
            "selectivity": selectivity.tolist(),
            "selectivity_above_chance": (selectivity - chance_gap).tolist(),
        }
    return {
        "labels": labels.tolist(),
        "baseline": {"majority_accuracy": control_majority.tolist()},
        "views": views,
    }


def bootstrap_intervals(
    signature: Signature,
    results: dict[str, torch.Tensor],
    control: dict[str, torch.Tensor] | None,
    prior_bits: np.ndarray,
    documents: np.ndarray,
    resamples: int,
    level: float,
    seed: int,
) -> dict:
    """Percentile intervals over documents for accuracy, information (and selectivity) per
    view x offset and for capacity and half-life. `results` and `control` carry the test
    pass's per-document sums; `prior_bits` [positions, offsets] is what the prior spends on
    each test target, `documents` the document of each test position."""
    offsets = signature.offsets
    count = results["doc_count"].numpy()
    prior_doc = np.zeros((len(count), len(offsets)))
    np.add.at(prior_doc, documents, prior_bits)
    weights = resample_weights(len(count), resamples, seed)
    prior = resampled_means(weights, prior_doc, count)[:, None, :]  # [B, 1, K]
    accuracy = resampled_means(weights, results["doc_correct"].numpy(), count)  # [B, V, K]
    info = prior - nats_to_bits(resampled_means(weights, results["doc_nll"].numpy(), count))
    per_offset = {"accuracy": accuracy, "info_bits": info}
    if control is not None:
        per_offset["selectivity"] = accuracy - resampled_means(
            weights, control["doc_correct"].numpy(), count
        )
    per_view = {"capacity": capacity(offsets, info, prior)}
    lives = half_life(offsets, info)
    if lives is not None:
        per_view["half_life"] = lives
    bounds = {name: percentile_interval(values, level) for name, values in per_offset.items()}
    pairs = {name: percentile_interval(values, level) for name, values in per_view.items()}
    views = {}
    for i, view in enumerate(signature.views):
        entry = {}
        for name, (lo, hi) in bounds.items():
            entry[f"{name}_lo"], entry[f"{name}_hi"] = lo[i].tolist(), hi[i].tolist()
        for name, (lo, hi) in pairs.items():
            entry[name] = [json_number(lo[i]), json_number(hi[i])]
        views[view] = entry
    return {
        "level": level,
        "resamples": resamples,
        "documents": len(count),
        "views": views,
    }


def summarise(signature: Signature) -> dict:
    """Per view: capacity, half-life, and the last offset whose information is significantly
    above zero (from the bootstrap intervals; None without them)."""
    bounds = signature.extra.get("intervals", {}).get("views", {})
    summary = {}
    for view, scores in signature.views.items():
        lower = bounds.get(view, {}).get("info_bits_lo")
        significant = (
            [k for k, lo in zip(signature.offsets, lower, strict=True) if k >= 0 and lo > 0]
            if lower is not None
            else []
        )
        summary[view] = {
            "capacity": scores.capacity,
            "half_life": json_number(half_life(signature.offsets, scores.info_bits)),
            "last_significant_offset": max(significant) if significant else None,
        }
    return summary
