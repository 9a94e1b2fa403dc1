"""What tells memory from probe artefacts and noise: control-task selectivity, bootstrap
intervals over probe-test documents, and each view's summary numbers (see Signature's
docstring for the keys they fill)."""

from __future__ import annotations

from memsig.signature.record import Signature, half_life, json_number


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
