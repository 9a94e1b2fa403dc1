"""Speech batches grouped by length: every utterance once per epoch, random but reproducible
batches, less padding than random batches, and extraction that puts each utterance's states
where a run over that utterance alone puts them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memsig.data.batches import EpochBatches, padding_fraction
from memsig.data.synth_speech import synth_speech_corpus
from memsig.data.utterances import utterance_loader
from memsig.extraction.alignment import current_graphemes
from memsig.extraction.frame_cache import build_frame_cache
from memsig.models.ctc_encoder import CTCEncoder


def wide_lengths(count: int, seed: int = 0) -> np.ndarray:
    """Utterance lengths in samples from 0.5 s to about 30 s (log-normal, as in read speech)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(16000 * 6), 0.7, count), 8000, 480000).astype(int)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A few synthetic utterances of 1 to 6 words, so lengths differ severalfold."""
    return synth_speech_corpus(
        str(tmp_path_factory.mktemp("speech")),
        seed=0,
        letters="abcd",
        utterances={"train": 11, "val": 1, "probe_train": 7, "probe_test": 1},
        speakers={"train": 2, "val": 1, "probe_train": 1, "probe_test": 1},
        words=(1, 6),
        lexicon_size=6,
    )


@pytest.fixture
def net(corpus) -> CTCEncoder:
    """A tiny untrained encoder (eval mode): extraction must place its states, not read them."""
    torch.manual_seed(0)
    return CTCEncoder(len(corpus.vocab), n_mels=16, stack=2, subsample=2, layers=2, hidden=8).eval()


def test_length_batches_hold_every_item_once_and_change_with_the_epoch():
    lengths = wide_lengths(1000)
    sampler, again = (
        EpochBatches(1000, 16, True, seed=3, shard=True, lengths=lengths) for _ in range(2)
    )
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        again.set_epoch(epoch)
        batches = list(sampler)
        assert batches == list(again)  # the same seed and epoch give the same batches
        assert sorted(i for b in batches for i in b) == list(range(1000))
        assert len(batches) == len(sampler) == 63
        epochs.append(batches)
    assert epochs[0] != epochs[1] != epochs[2]
    other = EpochBatches(1000, 16, True, seed=4, shard=True, lengths=lengths)
    assert list(other) != epochs[0]
    # the batch order is shuffled, not longest first
    longest = [int(lengths[b].max()) for b in epochs[0]]
    assert longest != sorted(longest, reverse=True) and longest != sorted(longest)


def test_length_batches_waste_far_less_padding_than_random_batches():
    lengths = wide_lengths(2000, seed=1)
    random = EpochBatches(2000, 16, True, seed=0, shard=True)
    by_length = EpochBatches(2000, 16, True, seed=0, shard=True, lengths=lengths)
    sorted_ = EpochBatches(2000, 16, False, shard=True, lengths=lengths)
    wasted = {
        name: padding_fraction(sampler, lengths)
        for name, sampler in (("random", random), ("by_length", by_length), ("sorted", sorted_))
    }
    assert wasted["random"] > 0.4  # a wide length distribution pads a lot at random
    assert wasted["by_length"] < wasted["random"] / 5
    assert wasted["sorted"] <= wasted["by_length"]
    assert padding_fraction([[0, 1]], [3, 1]) == pytest.approx(1 / 3)


def test_utterance_loader_reads_every_utterance_once_per_epoch(corpus):
    utterances = corpus.parts["train"]
    loader = utterance_loader(
        utterances, corpus.sample_rate, 4, True, seed=1, by_length=True, shard=True
    )
    read = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)  # as Lightning does at the start of every epoch
        batches = list(loader)
        read.append([int(n) for _, lengths, _, _ in batches for n in lengths])
        assert sorted(read[-1]) == sorted(u.num_samples for u in utterances)
        for waves, lengths, targets, target_lengths in batches:
            assert waves.shape == (len(lengths), int(lengths.max()))
            assert targets.shape == (len(lengths), int(target_lengths.max()))
    assert read[0] != read[1]


def test_extraction_by_length_keeps_each_utterance_in_its_place(corpus, net, tmp_path):
    utterances = corpus.parts["probe_train"]
    assert len({u.num_samples for u in utterances}) == len(utterances)
    loader = utterance_loader(utterances, corpus.sample_rate, 3, False, shard=False)
    assert [i for b in loader.sampler for i in b] != list(range(len(utterances)))
    views = dict(net.view_dims)
    identity = {"checkpoint_sha256": "x", "data": "y", "views": views, "part": "p"}
    cache, targets = build_frame_cache(
        net, utterances, corpus.sample_rate, tmp_path, identity, 3, "float32"
    )
    start = 0
    for i, u in enumerate(utterances):
        wave, length = loader.dataset[[i]][:2]
        with torch.no_grad():
            alone, frames = net.views(wave, length)
        rows = slice(start, start + int(frames[0]))
        for view in views:
            np.testing.assert_allclose(cache.views[view][rows], alone[view][0], atol=1e-5)
        local = current_graphemes(alone["logits"][0], u.tokens, net.blank)
        anchors = np.where(local >= 0, targets.first[start] + local, -1)
        np.testing.assert_array_equal(targets.anchors[rows], anchors)
        start = rows.stop
    assert start == len(targets.anchors)


@pytest.mark.slow
def test_frame_cache_of_some_views_skips_the_cell_states_not_asked_for(corpus, net, tmp_path):
    utterances = corpus.parts["probe_test"]
    caches = {}
    some = {v: net.view_dims[v] for v in ("layer2.c", "logits")}
    for name, views in (("all", dict(net.view_dims)), ("some", some)):
        identity = {"checkpoint_sha256": "x", "data": "y", "views": views, "part": name}
        caches[name] = build_frame_cache(
            net, utterances, corpus.sample_rate, tmp_path / name, identity, 3, "float32"
        )
    for view in ("layer2.c", "logits"):
        np.testing.assert_array_equal(caches["some"][0].views[view], caches["all"][0].views[view])
    np.testing.assert_array_equal(caches["some"][1].anchors, caches["all"][1].anchors)
    loader = utterance_loader(utterances, corpus.sample_rate, 3, False, shard=False)
    wave, length = loader.dataset[[0]][:2]
    with torch.no_grad():
        out, _ = net.views(wave, length, only={"layer2.c"})
    assert "layer2.c" in out and "layer1.c" not in out and "layer1.h" in out
