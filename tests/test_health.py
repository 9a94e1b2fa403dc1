"""The signature's health record and warning line, and the baselines in signature.csv."""

from __future__ import annotations

import csv

import pytest

from memsig.signature.health import health_record, health_warning
from memsig.signature.record import Signature, ViewScores

OFFSETS = [0, 1, 2]
BASELINE = {"majority_accuracy": [0.4, 0.4, 0.4], "prior_entropy_bits": [2.0, 2.0, 2.0]}


def signature(intervals: dict | None = None) -> Signature:
    """Two views: `good` reads offsets 0 and 1; `bad` is below the prior at k=1 (-0.3 bits,
    beyond its interval) and k=2 (-0.004 bits, within noise), below the majority at k=1."""
    views = {
        "good": ViewScores.from_scores(8, OFFSETS, [0.9, 0.7, 0.4], [0.5, 1.2, 2.0], [2.0] * 3),
        "bad": ViewScores.from_scores(64, OFFSETS, [0.8, 0.3, 0.4], [1.0, 2.3, 2.004], [2.0] * 3),
    }
    out = Signature({}, {}, {}, OFFSETS, BASELINE, views)
    if intervals is not None:
        out.extra["intervals"] = intervals
    return out


BANDS = {
    "views": {
        "good": {
            "info_bits_lo": [1.4, 0.7, -0.01],
            "info_bits_hi": [1.6, 0.9, 0.01],
            "accuracy_lo": [0.88, 0.68, 0.38],
            "accuracy_hi": [0.92, 0.72, 0.42],
        },
        "bad": {
            "info_bits_lo": [0.9, -0.4, -0.02],
            "info_bits_hi": [1.1, -0.2, 0.01],
            "accuracy_lo": [0.78, 0.28, 0.38],
            "accuracy_hi": [0.82, 0.32, 0.42],
        },
    }
}


def test_health_lists_what_lies_beyond_noise_and_nothing_else():
    record = health_record(signature(BANDS), fit_positions=100, num_classes=5)
    assert not record["ok"] and record["noise"] == "bootstrap interval"
    assert record["below_prior"] == [
        {"view": "bad", "offset": 1, "info_bits": pytest.approx(-0.3), "info_bits_hi": -0.2}
    ]
    assert record["below_majority"] == [
        {
            "view": "bad",
            "offset": 1,
            "accuracy": 0.3,
            "accuracy_hi": 0.32,
            "majority_accuracy": 0.4,
        }
    ]
    # 64 x 4 weights per head > 100 fit positions; 8 x 4 = 32 < 100
    assert record["too_little_data"] == [
        {"view": "bad", "dim": 64, "weights": 256, "fit_positions": 100}
    ]
    line = health_warning(record)
    assert "\n" not in line
    assert "bad k=1" in line and "good" not in line and "k=2" not in line
    assert "100 fit positions" in line
    for advice in ("more probe data", "probe.views", "probe=ridge"):
        assert advice in line
    # capacity keeps its definition (negative information counts as 0), the record says so
    assert signature(BANDS).views["bad"].capacity == pytest.approx(1.0 / 2.0)


def test_health_without_intervals_uses_a_fixed_tolerance():
    record = health_record(signature(), fit_positions=10_000, num_classes=5)
    assert [(e["view"], e["offset"]) for e in record["below_prior"]] == [("bad", 1)]
    assert record["too_little_data"] == [] and "tolerance" in record["noise"]


def test_a_healthy_signature_prints_nothing():
    good = Signature({}, {}, {}, OFFSETS, BASELINE, {"good": signature().views["good"]})
    record = health_record(good, fit_positions=10_000, num_classes=5)
    assert record["ok"] and health_warning(record) is None


def test_signature_csv_carries_the_baselines(tmp_path):
    signature().save(tmp_path)
    with open(tmp_path / "signature.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["view"] == "baseline"]
    for metric, values in BASELINE.items():
        got = [(int(r["offset"]), float(r["value"])) for r in rows if r["metric"] == metric]
        assert got == list(zip(OFFSETS, values, strict=True))
