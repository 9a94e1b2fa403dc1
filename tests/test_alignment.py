"""Grapheme targets for frames: forced alignment against known alignments and a brute-force
Viterbi, offset targets of a hand-made utterance, and the encoder's features and views."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from memsig.data.features import FrameStack, LogMel
from memsig.extraction.alignment import FrameTargets, current_graphemes, min_frames
from memsig.extraction.loader import PositionBatches
from memsig.models.ctc_encoder import CTCEncoder, greedy_decode, reverse_padded

BLANK = 3  # classes a=0, b=1, c=2, blank=3


def planted(path: list[int], classes: int = 4, sure: float = 0.9) -> torch.Tensor:
    """Log-probabilities that favour `path` (one class per frame) at every frame."""
    probs = torch.full((len(path), classes), (1 - sure) / (classes - 1))
    probs[torch.arange(len(path)), torch.tensor(path)] = sure
    return probs.log()


def test_current_grapheme_of_a_hand_made_utterance():
    # transcript "abba": frames  _  a  a  _  b  _  b  b  a  _
    path = [BLANK, 0, 0, BLANK, 1, BLANK, 1, 1, 0, BLANK]
    tokens = [0, 1, 1, 0]
    assert min_frames(tokens) == 5
    got = current_graphemes(planted(path), tokens, BLANK)
    assert got.tolist() == [-1, 0, 0, 0, 1, 1, 2, 2, 3, 3]


def test_forced_alignment_is_the_best_ctc_path():
    """Against brute force: every frame labelling that collapses to the transcript, scored."""
    rng = torch.Generator().manual_seed(0)
    tokens = [0, 2, 2]
    frames = 6
    for _ in range(5):
        log_probs = torch.randn(frames, 4, generator=rng).log_softmax(-1)
        best, best_score = None, -np.inf
        for labels in itertools.product(range(4), repeat=frames):
            merged = [c for i, c in enumerate(labels) if i == 0 or c != labels[i - 1]]
            if [c for c in merged if c != BLANK] != tokens:
                continue
            score = float(log_probs[torch.arange(frames), torch.tensor(labels)].sum())
            if score > best_score:
                best, best_score = labels, score
        starts = [i for i, c in enumerate(best) if c != BLANK and (i == 0 or c != best[i - 1])]
        expected = np.searchsorted(starts, np.arange(frames), side="right") - 1
        assert current_graphemes(log_probs, tokens, BLANK).tolist() == expected.tolist()


def test_offset_targets_of_aligned_frames():
    """Two utterances "abc" and "ca" (one grapheme stream); frames point at their current
    grapheme; offset k targets the grapheme k before it inside the same utterance."""
    tokens = np.array([0, 1, 2, 2, 0])
    anchors = np.array([-1, 0, 1, 1, 2, -1, 3, 4, 4])
    first = np.array([0, 0, 0, 0, 0, 3, 3, 3, 3])
    last = np.array([2, 2, 2, 2, 2, 4, 4, 4, 4])
    targets = FrameTargets(tokens, anchors, first, last)
    assert targets.valid_positions([0]).tolist() == [1, 2, 3, 4, 6, 7, 8]
    assert targets.valid_positions([0, 1]).tolist() == [2, 3, 4, 7, 8]
    assert targets.valid_positions([0, -1]).tolist() == [1, 2, 3, 6]
    positions = targets.valid_positions([0, 1, -1])
    assert positions.tolist() == [2, 3]
    views = {"x": np.arange(9, dtype=np.float32)[:, None]}
    batches = PositionBatches(views, tokens, positions, np.array([0, 1, -1]), anchors)
    features, got, _ = batches[[0, 1]]
    assert features["x"][:, 0].tolist() == [2.0, 3.0]
    assert got.tolist() == [[1, 0, 2], [1, 0, 2]]


def test_features_track_lengths_and_ignore_padding():
    mel = LogMel(16000, n_mels=20)
    stack = FrameStack(stack=3, subsample=2)
    rng = torch.Generator().manual_seed(1)
    short, long = torch.randn(3000, generator=rng), torch.randn(5000, generator=rng)
    batch = torch.zeros(2, 5000)
    batch[0, :3000], batch[1] = short, long
    feats, frames = stack(*mel(batch, torch.tensor([3000, 5000])))
    alone, alone_frames = stack(*mel(short[None], torch.tensor([3000])))
    assert frames.tolist() == [alone_frames.item(), feats.shape[1]]
    assert alone_frames.item() == -(-(3000 // 160 + 1) // 2)
    # the padded utterance's frames equal its frames alone: the STFT pads with zeros, as the
    # batch does, so even the windows that reach past its end see the same samples
    torch.testing.assert_close(feats[0, : frames[0]], alone[0], atol=1e-5, rtol=1e-5)
    assert feats.shape[-1] == 60


@pytest.mark.parametrize("bidirectional", [False, True])
def test_encoder_views_match_a_step_by_step_lstm(bidirectional):
    torch.manual_seed(0)
    net = CTCEncoder(4, n_mels=8, layers=2, hidden=6, bidirectional=bidirectional).eval()
    waves = torch.randn(2, 4000)
    lengths = torch.tensor([2500, 4000])
    views, frames = net.views(waves, lengths)
    assert set(views) == set(net.view_dims)
    assert all(views[v].shape[-1] == d for v, d in net.view_dims.items())
    for b in range(2):
        n = int(frames[b])
        x = views["input"][b, :n]
        for i, rnn in enumerate(net.rnns, start=1):
            hs, cs = [], []
            for direction in range(2 if bidirectional else 1):
                cell = torch.nn.LSTMCell(x.shape[-1], 6)
                w_ih, w_hh, b_ih, b_hh = rnn.all_weights[direction]
                cell.load_state_dict(
                    {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": b_ih, "bias_hh": b_hh}
                )
                h = c = torch.zeros(1, 6)
                steps = range(n) if direction == 0 else range(n - 1, -1, -1)
                out_h, out_c = torch.zeros(n, 6), torch.zeros(n, 6)
                for t in steps:
                    h, c = cell(x[t : t + 1], (h, c))
                    out_h[t], out_c[t] = h[0], c[0]
                hs.append(out_h)
                cs.append(out_c)
            torch.testing.assert_close(
                views[f"layer{i}.h"][b, :n], torch.cat(hs, -1), atol=1e-5, rtol=1e-4
            )
            torch.testing.assert_close(
                views[f"layer{i}.c"][b, :n], torch.cat(cs, -1), atol=1e-5, rtol=1e-4
            )
            x = torch.cat(hs, -1)


def test_reverse_padded_and_greedy_decoding():
    x = torch.arange(8.0).view(2, 4, 1)
    assert reverse_padded(x, torch.tensor([3, 4]))[..., 0].tolist() == [[2, 1, 0, 3], [7, 6, 5, 4]]
    path = [BLANK, 0, 0, BLANK, 1, BLANK, 1, 1, 0, BLANK]
    log_probs = planted(path)[None]
    assert greedy_decode(log_probs, torch.tensor([10]), BLANK) == [[0, 1, 1, 0]]
    assert greedy_decode(log_probs, torch.tensor([5]), BLANK) == [[0, 1]]


def test_global_normalisation_uses_training_statistics():
    mel = LogMel(16000, n_mels=10, normalise="global")
    rng = torch.Generator().manual_seed(2)
    waves = torch.randn(3, 4000, generator=rng) * torch.tensor([[0.1], [1.0], [3.0]])
    lengths = torch.tensor([4000, 3000, 2000])
    mel.fit_global([(waves[:2], lengths[:2]), (waves[2:], lengths[2:])])
    feats, frames = mel(waves, lengths)
    valid = feats[torch.arange(feats.shape[1])[None, :] < frames[:, None]]
    torch.testing.assert_close(valid.mean(0), torch.zeros(10), atol=1e-4, rtol=0)
    torch.testing.assert_close(valid.std(0, unbiased=False), torch.ones(10), atol=1e-4, rtol=0)


def test_spec_augment_masks_in_training_only():
    from memsig.data.features import SpecAugment

    augment = SpecAugment(freq_masks=2, freq_width=8, time_masks=2, time_width=6)
    feats = torch.randn(4, 50, 40) + 10.0  # no value is zero before masking
    lengths = torch.full((4,), 50)
    torch.manual_seed(0)
    masked, same_lengths = augment.train()(feats, lengths)
    assert same_lengths is lengths
    assert (masked == 0).any() and (masked[masked != 0] == feats[masked != 0]).all()
    unchanged, _ = augment.eval()(feats, lengths)
    assert torch.equal(unchanged, feats)
