"""The probe machinery against independent references: scikit-learn, loops, sequential runs."""

from __future__ import annotations

import functools
import math

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from memsig.data.markov import markov_corpus
from memsig.extraction.loader import PositionBatches, position_loader, targets_of
from memsig.extraction.offsets import offset_targets, resolve_offsets, valid_positions
from memsig.extraction.state_cache import CacheWriter, ExtractSettings, build_cache, open_cache
from memsig.models.recurrent import StackedRNN
from memsig.probes.baselines import prior_baselines
from memsig.probes.moments import fit_moments
from memsig.probes.multi_offset import MultiOffsetProbe
from memsig.probes.prior_guard import PriorGuard
from memsig.probes.scores import HeadScores, head_statistics
from memsig.runtime.errors import ConfigError, NumericalError
from memsig.runtime.trainer import quiet_trainer

SPLIT = {"train": 0.25, "val": 0.25, "probe_train": 0.25, "probe_test": 0.25}


@pytest.fixture(scope="module")
def net() -> StackedRNN:
    torch.manual_seed(0)
    return StackedRNN(vocab_size=5, cell="lstm", layers=2, hidden=12, embed=6).eval()


def identity(views: dict, part: str = "p") -> dict:
    return {"checkpoint_sha256": "x", "data": "y", "views": views, "part": part}


def test_resolve_offsets():
    assert resolve_offsets(None, 3) == [0, 1, 2, 3]
    assert resolve_offsets([2, -1, 0], None) == [2, -1, 0]
    for bad in ([1, "a"], [1.5], [], [1, 1], "012"):
        with pytest.raises(ConfigError, match="probe.offsets"):
            resolve_offsets(bad, None)
    for bad in (-1, "3", None, True):
        with pytest.raises(ConfigError, match="probe.max_offset"):
            resolve_offsets(None, bad)


def test_targets_are_index_shifts():
    tokens = np.arange(100) * 7 % 11
    offsets = np.array([3, 0, -2, 5])
    positions = np.asarray(valid_positions(len(tokens), offsets))
    assert positions[0] == 5 and positions[-1] == 97
    targets = offset_targets(tokens, positions, offsets)
    for row, t in enumerate(positions):
        for col, k in enumerate(offsets):
            assert targets[row, col] == tokens[t - k]


def test_targets_are_built_once_per_dataset(monkeypatch):
    """Every batch of every epoch and every reader of all targets share one matrix; a dataset
    with other positions or labels builds its own."""
    import memsig.extraction.loader as loader

    calls = []
    monkeypatch.setattr(loader, "offset_targets", lambda *a: calls.append(1) or offset_targets(*a))
    tokens = np.arange(300) * 7 % 11
    offsets = np.array([3, 0, -2, 5])
    positions = np.asarray(valid_positions(len(tokens), offsets))
    data = PositionBatches({}, tokens, positions, offsets)
    expected = np.array([[tokens[t - k] for k in offsets] for t in positions])
    for epoch in range(2):
        for _, targets, rows in position_loader(data, 64, shuffle=True, shard=False, seed=epoch):
            np.testing.assert_array_equal(targets.numpy(), expected[rows.numpy()])
    np.testing.assert_array_equal(targets_of(data), expected)
    assert targets_of(data) is targets_of(data) and len(calls) == 1
    part = data.replaced(positions=positions[10:40])
    np.testing.assert_array_equal(targets_of(part), expected[10:40])
    labels = np.arange(4 * 11).reshape(4, 11) % 3
    relabelled = data.replaced(labels=labels)
    np.testing.assert_array_equal(targets_of(relabelled), labels[np.arange(4), expected])
    assert len(calls) == 3


def test_validation_pass_scores_every_head_as_the_full_statistics_do():
    """The validation pass sums only cross-entropy; it equals the test statistics' exactly
    and a float64 softmax by hand, for every view x strength x offset head."""
    rng = np.random.default_rng(5)
    views, offsets, classes, strengths = {"a": 6, "b": 3}, 4, 5, [1e-3, 1e-1]
    fit_targets = rng.integers(0, classes, size=(200, offsets))
    fit_targets[:, 2] %= classes - 1  # a symbol unseen at one offset: the guard's prior
    probe = MultiOffsetProbe(
        views,
        offsets,
        classes,
        functools.partial(torch.optim.Adam, lr=0.02),
        {v: rng.normal(size=d) for v, d in views.items()},
        {v: np.diag(rng.uniform(0.5, 2.0, size=d)) for v, d in views.items()},
        strengths=strengths,
        guard=PriorGuard(len(views), classes, fit_targets),
    )
    with torch.no_grad():
        for head in probe.heads:
            head.weight.normal_()
            head.bias.normal_()
    batches = [
        (
            {v: torch.randn(n, d) for v, d in views.items()},
            torch.as_tensor(rng.integers(0, classes, size=(n, offsets))),
            torch.arange(start, start + n),
        )
        for start, n in ((0, 7), (7, 16), (23, 1))
    ]
    full = HeadScores(len(views), probe.num_heads, classes)
    with torch.no_grad():
        for step, (features, targets, rows) in enumerate(batches):
            probe.validation_step((features, targets, rows), step)
            full.update(*head_statistics(*probe.every_head(features, targets)), rows)
    fast, slow = probe.val_scores.results(), full.results()
    assert torch.equal(fast["xent_bits"], slow["xent_bits"]) and fast["count"] == 24

    reference = sum(head_nats_by_hand(probe, f, t) for f, t, _ in batches) / 24 / math.log(2)
    np.testing.assert_allclose(fast["xent_bits"].numpy(), reference.numpy(), rtol=1e-5)


@torch.no_grad()
def head_nats_by_hand(probe: MultiOffsetProbe, features: dict, targets: torch.Tensor):
    """Summed cross-entropy (nats) [views, heads] of every head, in float64 from the weights:
    whitening, class-major rows, a softmax over the seen symbols, the prior for unseen ones."""
    strengths, offsets = probe.num_strengths, probe.num_offsets
    seen = probe.guard.seen.T[:, None, :]  # [classes, 1, offsets]
    log_prior = probe.guard.log_prior.T[:, None, :].double()
    out = []
    for i, v in enumerate(probe.views):
        mean, whiten = getattr(probe, f"mean{i}").double(), getattr(probe, f"whiten{i}").double()
        x = (features[v].double() - mean) @ whiten
        logits = x @ probe.heads[i].weight.double().T + probe.heads[i].bias.double()
        logits = logits.view(len(x), probe.num_classes, strengths, offsets)
        log_p = logits.masked_fill(~seen, -math.inf).log_softmax(1)
        log_p = torch.where(seen, log_p + probe.guard.log_seen_mass.double(), log_prior)
        picked = log_p.gather(1, targets[:, None, None, :].expand(-1, 1, strengths, -1))
        out.append(-picked.sum(0).flatten())  # strength-major, as the heads are
    return torch.stack(out)


def test_prior_baselines_by_hand():
    train = np.array([[0, 1], [0, 1], [1, 1], [2, 0]])
    test = np.array([[0, 0], [1, 1]])
    base = prior_baselines(train, test, num_classes=3)
    # column 0: counts+1 = [3, 2, 2] / 7; majority 0; column 1: counts+1 = [2, 4, 1] / 7
    assert base["majority_accuracy"] == pytest.approx([0.5, 0.5])
    h0 = -(math.log2(3 / 7) + math.log2(2 / 7)) / 2
    h1 = -(math.log2(2 / 7) + math.log2(4 / 7)) / 2
    assert base["prior_entropy_bits"] == pytest.approx([h0, h1])


@pytest.mark.parametrize("segments", [1, 3, 7])
def test_cache_equals_one_sequential_pass(net, tmp_path, segments):
    """With a burn-in as long as the stream every row sees its whole history: the cache must
    equal the states of a single pass over the stream, whatever the number of rows."""
    tokens = np.random.default_rng(0).integers(0, 5, size=501)
    settings = ExtractSettings(segments=segments, chunk=64, burn_in=501)
    cache = build_cache(net.views, tokens, tmp_path / "c", identity(net.view_dims), settings)
    with torch.no_grad():
        full, _ = net.views(torch.as_tensor(tokens)[None])
    for view in net.view_dims:
        np.testing.assert_allclose(cache.views[view], full[view][0].numpy(), atol=1e-5)


def test_burn_in_warms_the_state_up(net, tmp_path):
    """A short burn-in gives nearly the sequential states: the state forgets its cold start."""
    tokens = np.random.default_rng(1).integers(0, 5, size=2000)
    settings = ExtractSettings(segments=8, chunk=100, burn_in=100)
    cache = build_cache(net.views, tokens, tmp_path / "c", identity(net.view_dims), settings)
    with torch.no_grad():
        full, _ = net.views(torch.as_tensor(tokens)[None])
    assert np.abs(cache.views["layer2.h"] - full["layer2.h"][0].numpy()).max() < 1e-3


def test_a_subset_of_views_skips_the_others_and_keeps_the_values(net, tmp_path):
    """Caching some views skips deriving the cell states not asked for, and the views kept
    hold exactly what the full extraction holds."""
    tokens = np.random.default_rng(3).integers(0, 5, size=400)
    settings = ExtractSettings(segments=3, chunk=50, burn_in=30)
    full = build_cache(net.views, tokens, tmp_path / "all", identity(net.view_dims), settings)
    asked = []

    def views(chunk, state, only=None):
        asked.append(only)
        return net.views(chunk, state, only)

    subset = {"layer2.h": 12, "layer2.c": 12}
    some = build_cache(views, tokens, tmp_path / "some", identity(subset), settings)
    assert asked and all(only == set(subset) for only in asked)
    with torch.no_grad():
        out, _ = net.views(torch.as_tensor(tokens)[None, :50], only={"layer2.h"})
    assert "layer1.c" not in out and "layer2.c" not in out and "layer1.h" in out
    for view in subset:
        np.testing.assert_array_equal(some.views[view], full.views[view])


def test_writer_puts_every_row_at_its_position(tmp_path):
    """Rows arrive in blocks of scattered runs (and sometimes none): each lands at its
    position."""
    rows = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    writer = CacheWriter(tmp_path / "c", {"x": 3}, 10, "float32")
    writer.write(np.array([], dtype=np.int64), {"x": rows[:0]})
    for block in (np.array([7, 8, 9, 0, 1]), np.array([5, 6, 2, 3, 4])):
        writer.write(block, {"x": rows[block]})
    cache = writer.finish(identity({"x": 3}))
    np.testing.assert_array_equal(cache.views["x"], rows.numpy())
    assert writer.count == 10


def test_a_nan_state_stops_extraction_and_leaves_no_cache(net, tmp_path):
    tokens = np.random.default_rng(4).integers(0, 5, size=300)

    def broken(chunk, state, only=None):
        out, state = net.views(chunk, state, only)
        out["layer1.h"][0, -1, 3] = float("nan")
        return out, state

    settings = ExtractSettings(segments=2, chunk=50, burn_in=20)
    with pytest.raises(NumericalError, match="view layer1.h holds NaN"):
        build_cache(broken, tokens, tmp_path / "c", identity(net.view_dims), settings)
    assert open_cache(tmp_path / "c", identity(net.view_dims)) is None


def test_cache_is_reused_only_when_its_manifest_matches(net, tmp_path):
    tokens = np.random.default_rng(2).integers(0, 5, size=300)
    settings = ExtractSettings(segments=2, chunk=50, burn_in=20)
    views = {"layer1.h": 12}
    build_cache(net.views, tokens, tmp_path / "c", identity(views), settings)
    stamp = (tmp_path / "c" / "layer1.h.npy").stat().st_mtime_ns
    build_cache(net.views, tokens, tmp_path / "c", identity(views), settings)
    assert (tmp_path / "c" / "layer1.h.npy").stat().st_mtime_ns == stamp
    assert open_cache(tmp_path / "c", {**identity(views), "data": "other"}) is None
    (tmp_path / "c" / "manifest.json").unlink()  # an interrupted extraction leaves no manifest
    assert open_cache(tmp_path / "c", identity(views)) is None


def fit_probe(cache, tokens, positions, offsets, epochs, seed=0):
    data = PositionBatches(cache.views, tokens, positions, np.asarray(offsets))
    views = {"layer2.h": 12}
    probe = MultiOffsetProbe(
        views,
        len(offsets),
        5,
        functools.partial(torch.optim.Adam, lr=0.02),
        *fit_moments(data, views, batch_size=1024),
    )
    trainer = quiet_trainer(epochs)
    L.seed_everything(seed, verbose=False)
    trainer.fit(
        probe,
        position_loader(data, 256, shuffle=True, shard=True, seed=seed),
        position_loader(data, 1024, shuffle=False, shard=True),
    )
    return probe


@pytest.mark.slow
def test_linear_probe_agrees_with_scikit_learn(net, tmp_path):
    corpus = markov_corpus(order=2, vocab_size=5, branching=2, num_chars=24000, seed=3, split=SPLIT)
    offsets = [0, 1, 2, 4]
    settings = ExtractSettings(segments=4, chunk=128, burn_in=64)
    caches = {
        part: build_cache(
            net.views,
            corpus.parts[part],
            tmp_path / part,
            identity({"layer2.h": 12}, part),
            settings,
        )
        for part in ("probe_train", "probe_test")
    }
    train_tokens, test_tokens = corpus.parts["probe_train"], corpus.parts["probe_test"]
    train_pos = np.asarray(valid_positions(len(train_tokens), offsets))
    test_pos = np.asarray(valid_positions(len(test_tokens), offsets))
    probe = fit_probe(caches["probe_train"], train_tokens, train_pos, offsets, epochs=25)
    probe.use_best_weights()
    test = PositionBatches(caches["probe_test"].views, test_tokens, test_pos, np.asarray(offsets))
    quiet_trainer(1).test(
        probe, position_loader(test, 1024, shuffle=False, shard=True), verbose=False
    )
    ours = probe.test_results["accuracy"][0].numpy()

    x_train = caches["probe_train"].views["layer2.h"][train_pos]
    x_test = caches["probe_test"].views["layer2.h"][test_pos]
    y_train = targets_of(PositionBatches({}, train_tokens, train_pos, np.asarray(offsets)))
    y_test = targets_of(test)
    for column, k in enumerate(offsets):
        reference = make_pipeline(StandardScaler(), LogisticRegression(C=100.0, max_iter=5000))
        reference.fit(x_train, y_train[:, column])
        theirs = reference.score(x_test, y_test[:, column])
        assert abs(ours[column] - theirs) <= 0.02, (k, ours[column], theirs)


def test_each_head_keeps_its_best_validation_weights(net, tmp_path):
    tokens = np.random.default_rng(4).integers(0, 5, size=3000)
    cache = build_cache(
        net.views,
        tokens,
        tmp_path / "c",
        identity({"layer2.h": 12}),
        ExtractSettings(segments=2, chunk=100, burn_in=50),
    )
    offsets = [0, 3]
    positions = np.asarray(valid_positions(len(tokens), offsets))
    probe = fit_probe(cache, tokens, positions, offsets, epochs=3)
    assert torch.isfinite(probe.best_val_xent).all()

    # Two more "epochs" by hand: offset 0's head improves in the first, offset 3's in the second.
    rows = torch.arange(len(offsets) * 5).view(5, len(offsets)).T  # head rows per offset
    best = probe.best_val_xent.clone()
    with torch.no_grad():
        probe.heads[0].weight.add_(1.0)
    first = probe.heads[0].weight.clone()
    probe.keep_best(torch.stack([best[0] - torch.tensor([0.1, -0.1])]))
    with torch.no_grad():
        probe.heads[0].weight.add_(1.0)
    second = probe.heads[0].weight.clone()
    probe.keep_best(torch.stack([best[0] + torch.tensor([0.5, -0.2])]))

    probe.use_best_weights()
    kept = probe.heads[0].weight
    assert torch.equal(kept[rows[0]], first[rows[0]])  # offset 0: its best was the first
    assert torch.equal(kept[rows[1]], second[rows[1]])  # offset 3: its best was the second
    expected = [float(best[0, 0]) - 0.1, float(best[0, 1]) - 0.2]
    assert probe.best_val_xent[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_cache_refuses_to_fill_the_disk(net, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from memsig.runtime.errors import MemsigError

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    tokens = np.zeros(500, dtype=np.int64)
    with pytest.raises(MemsigError, match="float16"):
        build_cache(
            net.views,
            tokens,
            tmp_path / "c",
            identity(net.view_dims),
            ExtractSettings(segments=2, chunk=50, burn_in=10),
        )
    assert not list((tmp_path / "c").glob("*.npy"))


def test_float16_cache_holds_the_same_states(net, tmp_path):
    tokens = np.random.default_rng(5).integers(0, 5, size=400)
    half = build_cache(
        net.views,
        tokens,
        tmp_path / "h",
        identity(net.view_dims),
        ExtractSettings(segments=2, chunk=50, burn_in=400, dtype="float16"),
    )
    full = build_cache(
        net.views,
        tokens,
        tmp_path / "f",
        identity(net.view_dims),
        ExtractSettings(segments=2, chunk=50, burn_in=400),
    )
    assert half.views["layer1.h"].dtype == np.float16
    np.testing.assert_allclose(half.views["layer1.h"], full.views["layer1.h"], atol=2e-3)


def test_epoch_batches_depend_only_on_seed_and_epoch():
    from memsig.data.batches import EpochBatches

    first, again = (
        EpochBatches(10, 3, shuffle=True, seed=1, shard=True),
        EpochBatches(10, 3, shuffle=True, seed=1, shard=True),
    )
    first.set_epoch(4)
    again.set_epoch(4)
    batches = list(first)
    assert batches == list(again)
    assert sorted(i for b in batches for i in b) == list(range(10))
    assert [len(b) for b in batches] == [3, 3, 3, 1] and len(first) == 4
    again.set_epoch(5)
    assert list(again) != batches
    assert list(EpochBatches(5, 2, shuffle=False, shard=True)) == [[0, 1], [2, 3], [4]]
