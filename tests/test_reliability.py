"""Controls, intervals, online code and the extra records of a signature."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from memsig.extraction.loader import PositionBatches, targets_of
from memsig.extraction.state_cache import ExtractSettings, build_cache
from memsig.measures.bootstrap import (
    document_ids,
    percentile_interval,
    resample_weights,
    resampled_means,
)
from memsig.measures.control import control_labels, control_record, relabelled
from memsig.measures.online_code import block_ends, online_code_bits
from memsig.pipeline.plan import prepare
from memsig.pipeline.run import run
from memsig.probes.baselines import prior_baselines
from memsig.probes.fit import ProbeSetup, fit_and_test
from memsig.runtime.errors import ConfigError
from memsig.signature.record import Signature, half_life, view_scores


def test_bootstrap_interval_coverage_is_close_to_nominal():
    """Bernoulli hits with known p, grouped in documents: the percentile interval of the
    accuracy covers p in about `level` of many repetitions."""
    p, documents, per_doc, level, repetitions = 0.7, 40, 25, 0.9, 400
    rng = np.random.default_rng(0)
    covered = 0
    for rep in range(repetitions):
        hits = rng.random((documents, per_doc)) < p
        weights = resample_weights(documents, 500, seed=rep)
        means = resampled_means(weights, hits.sum(1).astype(float), np.full(documents, per_doc))
        lo, hi = percentile_interval(means, level)
        covered += lo <= p <= hi
    assert abs(covered / repetitions - level) < 0.05


def test_resampled_means_match_a_direct_weighted_mean():
    sums, counts = np.array([3.0, 5.0, 1.0]), np.array([4.0, 10.0, 2.0])
    weights = np.array([[2, 0, 1], [0, 3, 0]])
    expected = [(6 + 1) / (8 + 2), 15 / 30]
    assert resampled_means(weights, sums, counts) == pytest.approx(expected)
    assert document_ids(np.array([5, 9, 10, 31]), 10).tolist() == [0, 0, 1, 2]


def test_online_code_length_matches_a_hand_computation():
    assert block_ends(100, [0.1, 0.3, 1.0]) == [10, 30, 100]
    # first 10 targets uniformly over 4 symbols (2 bits each), then 20 at 1.5 bits, 70 at 0.5
    bits = online_code_bits(10, 4, [20, 70], [np.array([1.5]), np.array([0.5])])
    assert bits == pytest.approx([10 * 2 + 20 * 1.5 + 70 * 0.5])
    with pytest.raises(ConfigError, match="mdl_schedule"):
        block_ends(100, [0.3, 0.1, 1.0])
    with pytest.raises(ConfigError, match="empty blocks"):
        block_ends(5, [0.01, 1.0])


def test_half_life_is_the_first_offset_below_half_of_k0():
    assert half_life([0, 1, 2, 3], [2.0, 1.5, 0.9, 0.1]) == 2
    assert half_life([0, 1], [2.0, 1.5]) == math.inf
    assert half_life([1, 2], [2.0, 1.5]) is None
    assert half_life([0, 1, 2], np.array([[2.0, 0.5, 0.1], [2.0, 1.8, 0.1]])).tolist() == [1, 2]


def test_control_labels_are_seeded_and_drawn_from_the_target_distribution():
    targets = np.zeros((500, 3), dtype=np.int64)
    targets[:, 1] = np.arange(500) % 4  # offset 1: four symbols, equally often
    labels = control_labels(targets, 4, seed=3)
    assert labels.shape == (3, 4)
    np.testing.assert_array_equal(labels, control_labels(targets, 4, seed=3))
    assert (labels[0] == 0).all()  # a single observed symbol: every type maps to it


@pytest.mark.slow
def test_selectivity_is_near_zero_on_random_features(tiny_config, tmp_path):
    """States that hold nothing: both the real and the control probe stay at chance, so
    selectivity is the chance gap and selectivity above chance is about zero."""
    cfg = tiny_config("probe.max_epochs=4")
    rng = np.random.default_rng(1)
    offsets = [0, 1, 2, 3]
    tokens = {part: rng.integers(0, 5, size=6000) for part in ("train", "test")}
    generator = torch.Generator().manual_seed(0)

    def random_states(batch, state, only=None):
        return {"noise": torch.randn(*batch.shape, 16, generator=generator)}, state

    caches = {
        part: build_cache(
            random_states,
            tokens[part],
            tmp_path / part,
            {"views": {"noise": 16}, "part": part},
            ExtractSettings(segments=2, chunk=512, burn_in=0),
        )
        for part in tokens
    }
    offs = np.asarray(offsets)
    positions = np.arange(3, 6000)
    fit, val, test = (
        PositionBatches(caches[part].views, tokens[part], pos, offs)
        for part, pos in (
            ("train", positions[:5000]),
            ("train", positions[5010:]),
            ("test", positions),
        )
    )
    views = {"noise": 16}
    setup = ProbeSetup(cfg, tmp_path, views, 5, torch.device("cpu"))
    real = fit_and_test(setup, (fit, val, test), ["real"])
    labels = control_labels(targets_of(fit), 5, seed=0)
    sets = tuple(relabelled(d, labels) for d in (fit, val, test))
    control = fit_and_test(setup, sets, ["control"])
    baseline = prior_baselines(targets_of(fit), targets_of(test), 5)
    majority = prior_baselines(targets_of(sets[0]), targets_of(sets[2]), 5)["majority_accuracy"]
    signature = Signature(
        {}, {}, {}, offsets, baseline, view_scores(views, offsets, real.results, baseline)
    )
    record = control_record(signature, labels, control.results, np.asarray(majority))
    scores = record["views"]["noise"]
    assert np.abs(scores["selectivity_above_chance"]).max() < 0.03
    gap = np.asarray(baseline["majority_accuracy"]) - majority
    np.testing.assert_allclose(scores["selectivity"], gap, atol=0.03)
    assert np.abs(signature.views["noise"].info_bits).max() < 0.02


def test_a_bootstrap_needs_two_documents(tiny_config):
    cfg = tiny_config("probe.bootstrap.block_chars=1000000")
    with pytest.raises(ConfigError, match="block_chars=1000000 leaves 1 document"):
        prepare(cfg)


@pytest.mark.slow
def test_every_option_lands_in_the_signature_files(tiny_config, tmp_path):
    cfg = tiny_config(
        "data.num_chars=20000",
        "model.training.max_epochs=1",
        "probe.max_epochs=2",
        "probe.max_offset=8",
        "probe.views=[layer1.h]",
        "probe.control=true",
        "probe.untrained_baseline=true",
        "probe.mdl=true",
        "probe.mdl_schedule=[0.25,1.0]",
        "probe.bootstrap.resamples=200",
        "probe.during_training.every_n_steps=10",
        "probe.during_training.chars=1500",
    )
    signature = run(cfg)
    run_dir = tmp_path / "run"
    raw = json.loads((run_dir / "signature.json").read_text())
    for key in ("control", "untrained", "mdl", "intervals", "summary"):
        assert key in raw, key
    view = raw["views"]["layer1.h"]
    bounds = raw["intervals"]["views"]["layer1.h"]
    for metric in ("accuracy", "info_bits"):
        lo, hi = np.asarray(bounds[f"{metric}_lo"]), np.asarray(bounds[f"{metric}_hi"])
        assert (lo <= np.asarray(view[metric]) + 1e-9).all()
        assert (np.asarray(view[metric]) <= hi + 1e-9).all()
    assert raw["summary"]["layer1.h"]["last_significant_offset"] is not None
    assert len(raw["mdl"]["views"]["layer1.h"]["online_code_bits"]) == 9
    untrained = Signature.load(run_dir / "untrained")
    assert untrained.views["layer1.h"].accuracy == raw["untrained"]["views"]["layer1.h"]["accuracy"]
    metrics = {line.split(",")[2] for line in (run_dir / "signature.csv").read_text().splitlines()}
    assert {"control.selectivity", "intervals.info_bits_lo", "mdl.online_code_bits"} <= metrics
    assert {"untrained.accuracy", "half_life", "last_significant_offset"} <= metrics
    heatmap = json.loads((run_dir / "training_signature.json").read_text())
    assert heatmap["steps"][0] == 0 and len(heatmap["steps"]) >= 2
    assert (run_dir / "training_signature.png").is_file()
    assert signature.extra["summary"] == raw["summary"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ridge", "mlp"])
def test_every_probe_kind_gives_controls_intervals_and_online_code(tiny_config, tmp_path, kind):
    """The control task, the bootstrap (per-document sums) and the online code come from the
    one fit-and-test function, so they work for every probe kind."""
    hidden = ["probe.mlp.hidden=8"] if kind == "mlp" else []
    cfg = tiny_config(
        f"probe={kind}",
        *hidden,
        "model.training.max_epochs=1",
        "++probe.max_epochs=2",  # ++: mlp trains; ridge has no epochs
        "probe.max_offset=4",
        "probe.views=[layer1.h]",
        "probe.control=true",
        "probe.mdl=true",
        "probe.mdl_schedule=[0.5,1.0]",
        "probe.bootstrap.resamples=100",
    )
    run(cfg)
    raw = json.loads((tmp_path / "run" / "signature.json").read_text())
    assert raw["probe"]["kind"] == kind
    view = raw["views"]["layer1.h"]
    bounds = raw["intervals"]["views"]["layer1.h"]
    selectivity = np.asarray(raw["control"]["views"]["layer1.h"]["selectivity"])
    np.testing.assert_allclose(
        selectivity,
        np.asarray(view["accuracy"]) - raw["control"]["views"]["layer1.h"]["accuracy"],
    )
    points = {"accuracy": view["accuracy"], "info_bits": view["info_bits"]}
    points["selectivity"] = selectivity
    for metric, point in points.items():
        lo, hi = np.asarray(bounds[f"{metric}_lo"]), np.asarray(bounds[f"{metric}_hi"])
        assert (lo <= np.asarray(point) + 1e-9).all() and (np.asarray(point) <= hi + 1e-9).all()
        assert (hi > lo).any(), metric  # real per-document sums: replicates differ
    assert len(raw["mdl"]["views"]["layer1.h"]["online_code_bits"]) == len(raw["offsets"])
