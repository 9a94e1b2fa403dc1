"""The signature's `health` record: where its numbers are not memory but a probe failing.

A probe is an estimator: on held-out data it should never do worse than the prior (its
information below zero) or than always guessing the majority symbol, beyond noise. Where it
does, or where the probe data are too few for the heads' weights, the number would read as
memory (or as its absence) when it is an artefact of too little data; the record names each
such view x offset and the run says so in one warning line. Nothing is clipped: `capacity`
counts max(0, information) as DESIGN.md defines it, and every negative information beyond
noise is listed here.

Noise: the bootstrap interval over probe-test documents (`intervals`): a view x offset is
flagged when the whole interval lies below zero (information) or below the majority baseline
(accuracy). Without intervals (probe.bootstrap.resamples=0), a fixed tolerance stands in.
"""

from __future__ import annotations

from collections.abc import Mapping

from memsig.signature.record import Signature

TOLERANCE = {"info_bits": 0.01, "accuracy": 0.01}  # noise allowance without intervals
ADVICE = (
    "more probe data (data.split.probe_train / a longer text), fewer or narrower views "
    "(probe.views=[...]), or probe=ridge"
)


def health_record(signature: Signature, fit_positions: int, num_classes: int) -> dict:
    """signature.json's `health`: `below_prior` and `below_majority` (view, offset, value and
    the bound that decided), `too_little_data` (views whose heads have more weights than there
    are fit positions), `noise` (how noise was judged) and `ok`."""
    bands = signature.extra.get("intervals", {}).get("views", {})
    majority = signature.baseline["majority_accuracy"]
    below_prior, below_majority, too_little = [], [], []
    for view, scores in signature.views.items():
        upper = _upper_bounds(bands.get(view), scores)
        for i, k in enumerate(signature.offsets):
            if upper["info_bits"][i] < 0:
                below_prior.append(
                    {
                        "view": view,
                        "offset": k,
                        "info_bits": scores.info_bits[i],
                        "info_bits_hi": upper["info_bits"][i],
                    }
                )
            if upper["accuracy"][i] < majority[i]:
                below_majority.append(
                    {
                        "view": view,
                        "offset": k,
                        "accuracy": scores.accuracy[i],
                        "accuracy_hi": upper["accuracy"][i],
                        "majority_accuracy": majority[i],
                    }
                )
        weights = scores.dim * (num_classes - 1)
        if fit_positions < weights:
            too_little.append(
                {
                    "view": view,
                    "dim": scores.dim,
                    "weights": weights,
                    "fit_positions": fit_positions,
                }
            )
    noise = "bootstrap interval" if bands else f"tolerance {TOLERANCE} (no intervals)"
    return {
        "ok": not (below_prior or below_majority or too_little),
        "noise": noise,
        "below_prior": below_prior,
        "below_majority": below_majority,
        "too_little_data": too_little,
    }


def _upper_bounds(band: Mapping | None, scores) -> dict[str, list[float]]:
    """Per metric, the upper end of each offset's noise range."""
    if band is not None:
        return {m: list(band[f"{m}_hi"]) for m in TOLERANCE}
    return {m: [v + tol for v in getattr(scores, m)] for m, tol in TOLERANCE.items()}


def health_warning(record: Mapping) -> str | None:
    """One line naming what the health record flags and what to do; None when all is well."""
    if record["ok"]:
        return None
    parts = []
    for key, what in (
        ("below_prior", "information below zero"),
        ("below_majority", "accuracy below the majority baseline"),
    ):
        if record[key]:
            parts.append(f"{what} beyond noise at {_places(record[key])}")
    if record["too_little_data"]:
        views = ", ".join(
            f"{e['view']} ({e['weights']} weights per head)" for e in record["too_little_data"]
        )
        fit = record["too_little_data"][0]["fit_positions"]
        parts.append(f"too little probe data ({fit} fit positions) for {views}")
    return (
        "signature health: " + "; ".join(parts) + f". These numbers are probe artefacts, not "
        f"memory: use {ADVICE} (details under 'health' in signature.json)"
    )


def _places(entries: list[Mapping]) -> str:
    """'view k=1,2; other k=5' from flagged view x offset entries."""
    by_view: dict[str, list[str]] = {}
    for e in entries:
        by_view.setdefault(e["view"], []).append(str(e["offset"]))
    return "; ".join(f"{v} k={','.join(ks)}" for v, ks in by_view.items())
