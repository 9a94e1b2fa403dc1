"""Measures as plugins: a function `measure(context) -> dict` named in the config's `measures`
list adds its record to signature.json; a name that cannot be imported fails before work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from memsig.extraction.loader import targets_of
from memsig.measures.context import MeasureContext
from memsig.pipeline.run import run
from memsig.runtime.errors import ConfigError


def test_position_counts(context: MeasureContext) -> dict:
    """A measure defined outside the package: how many fit and test positions there are, and
    the majority baseline recomputed (the fit block's most frequent symbol, on test)."""
    fit, _, test = context.sets
    fit_y, test_y = targets_of(fit), targets_of(test)
    majority = [
        float(np.mean(test_y[:, j] == np.bincount(fit_y[:, j]).argmax()))
        for j in range(test_y.shape[1])
    ]
    return {"position_counts": {"fit": len(fit), "test": len(test), "majority": majority}}


test_position_counts.__test__ = False  # a measure, not a test


@pytest.mark.slow
def test_a_measure_from_the_config_adds_its_record(tiny_config):
    cfg = tiny_config(
        "probe.bootstrap.resamples=0",
        "measures=[memsig.measures.bootstrap.measure,test_measures.test_position_counts]",
    )
    signature = run(cfg)
    record = json.loads((Path(cfg.paths.output_dir) / "signature.json").read_text())
    counts = record["position_counts"]
    assert counts == signature.extra["position_counts"]
    assert counts["test"] == record["data"]["probe_test_positions"]
    assert counts["fit"] > 0
    # the measure saw the same test targets the signature's baselines come from
    np.testing.assert_allclose(counts["majority"], record["baseline"]["majority_accuracy"])
    assert "intervals" not in record  # its switch (probe.bootstrap.resamples) is off


def test_a_measure_that_cannot_be_imported_fails_before_work(tiny_config):
    cfg = tiny_config("measures=[memsig.measures.control.measure,memsig.measures.nope.measure]")
    with pytest.raises(ConfigError) as caught:
        run(cfg)
    assert "memsig.measures.nope.measure" in str(caught.value)
    assert "module.function(context) -> dict" in str(caught.value)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()
