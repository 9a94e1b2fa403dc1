"""Memory beyond what is still in view (probe.condition_on): features, moments, the estimate."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import compose_config
from memsig.extraction.loader import PositionBatches, position_loader
from memsig.measures.conditioning import ConditionedBatches, Conditioning, context_onehot
from memsig.pipeline.run import run
from memsig.probes.moments import fit_moments
from memsig.signature.record import Signature


def test_context_onehot_matches_a_loop():
    rng = np.random.default_rng(0)
    tokens, vocab, m = rng.integers(5, size=40), 5, 3
    positions = np.array([0, 1, 2, 17, 39])
    fast = context_onehot(tokens, positions, m, vocab)
    for row, t in enumerate(positions):
        slow = np.zeros((m, vocab), dtype=np.float32)
        for slot, s in enumerate(range(t - m + 1, t + 1)):
            if s >= 0:
                slow[slot, tokens[s]] = 1
        np.testing.assert_array_equal(fast[row], slow.ravel())


def test_derived_views_and_their_moments():
    rng = np.random.default_rng(1)
    tokens = rng.integers(4, size=300)
    states = {"h": rng.normal(size=(300, 3)).astype(np.float32)}
    positions = np.arange(5, 300)
    base = PositionBatches(states, tokens, positions, np.array([0, 1, 2]))
    conditioning = Conditioning(2, {"h": 3}, 4)
    assert conditioning.probe_dims == {"h": 3, "last2": 8, "h+last2": 11}
    data = conditioning.batches(base)
    assert isinstance(data, ConditionedBatches)
    features, targets, rows = data[[7, 3, 100]]
    assert rows.tolist() == [3, 7, 100]  # each row's index travels with it, by position
    pos = np.sort(positions[[7, 3, 100]])
    np.testing.assert_array_equal(features["h+last2"][:, :3], states["h"][pos])
    np.testing.assert_array_equal(features["last2"], context_onehot(tokens, pos, 2, 4))
    np.testing.assert_array_equal(features["h+last2"][:, 3:], features["last2"])
    got_mean, got_cov = fit_moments(data, conditioning.probe_dims, batch_size=64)
    np.testing.assert_allclose(got_cov["h"], np.cov(states["h"][positions].T, bias=True), atol=1e-6)
    joined = np.concatenate([states["h"][positions], context_onehot(tokens, positions, 2, 4)], 1)
    np.testing.assert_allclose(got_mean["h+last2"], joined.mean(0), atol=1e-6)
    np.testing.assert_allclose(got_cov["h+last2"], np.cov(joined.T, bias=True), atol=1e-6)
    assert len(list(position_loader(data, 64, shuffle=False, shard=False))) == -(
        -len(positions) // 64
    )


def _beyond(signature: Signature, view: str) -> np.ndarray:
    return np.array(signature.extra["conditional_memory"]["views"][view]["beyond_bits"])


@pytest.fixture(scope="module")
def ngram_runs(tmp_path_factory):
    """The order-3 count model's `context` (the last 2 inputs) conditioned on 1 and 2 inputs."""
    out = {}
    for m in (1, 2):
        cfg = compose_config(
            tmp_path_factory.mktemp(f"ngram{m}"),
            [
                "model=ngram",
                "model.order=3",
                "probe.views=[context]",
                f"probe.condition_on={m}",
                "probe.max_offset=5",
            ],
        )
        out[m] = run(cfg)
    return out


def test_state_that_is_the_window_in_view_adds_nothing(ngram_runs):
    beyond = _beyond(ngram_runs[2], "context")  # n - 1 = 2 <= m = 2
    assert np.abs(beyond).max() < 0.05, beyond


def test_state_holding_more_than_the_view_adds_exactly_that(ngram_runs):
    signature = ngram_runs[1]
    beyond = _beyond(signature, "context")
    record = signature.extra["conditional_memory"]
    assert record["condition_on"] == 1
    assert abs(beyond[0]) < 0.05  # x_t is in view
    # x_{t-1} is in the context but not in view: the state adds what x_t leaves unknown of it
    assert beyond[1] > 0.5
    assert record["views"]["context"]["capacity_beyond_context"] > 0.2
    saved = Signature.load(signature.model["checkpoint"].rsplit("/checkpoints", 1)[0])
    assert saved.extra["conditional_memory"]["views"]["context"]["beyond_bits"] == list(beyond)


def test_nothing_in_view_gives_the_plain_information(tiny_config):
    signature = run(tiny_config("model=ngram", "model.order=2", "probe.condition_on=0"))
    record = signature.extra["conditional_memory"]
    for view, scores in signature.views.items():
        np.testing.assert_allclose(record["views"][view]["beyond_bits"], scores.info_bits)
    assert record["context"]["xent_bits"] == signature.baseline["prior_entropy_bits"]
