"""Batches of whole utterances: padded waveforms, transcripts, and the true lengths of both."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from memsig.data.batches import EpochBatches
from memsig.data.speech import Utterance, load_audio

Batch = tuple[Tensor, Tensor, Tensor, Tensor]  # waves [B, S], lengths [B], targets [B, L], lengths


def pad_batch(items: Sequence[tuple[np.ndarray, np.ndarray]]) -> Batch:
    """Zero-padded waveforms and targets with their lengths."""
    wave_lengths = torch.tensor([len(w) for w, _ in items])
    target_lengths = torch.tensor([len(t) for _, t in items])
    waves = torch.zeros(len(items), int(wave_lengths.max()))
    targets = torch.zeros(len(items), int(target_lengths.max()), dtype=torch.long)
    for b, (wave, tokens) in enumerate(items):
        waves[b, : len(wave)] = torch.from_numpy(wave)
        targets[b, : len(tokens)] = torch.from_numpy(tokens)
    return waves, wave_lengths, targets, target_lengths


class UtteranceBatches(Dataset):
    """Index with a list of utterance indices; returns their padded batch, read from disk when
    asked for (in a worker process when there are workers)."""

    def __init__(self, utterances: Sequence[Utterance], sample_rate: int) -> None:
        self.utterances, self.sample_rate = list(utterances), sample_rate

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: list[int]) -> Batch:
        chosen = [self.utterances[i] for i in index]
        return pad_batch([(load_audio(u, self.sample_rate), u.tokens) for u in chosen])


def utterance_loader(
    utterances: Sequence[Utterance],
    sample_rate: int,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    workers: int = 0,
    by_length: bool = True,
    *,
    shard: bool,
) -> DataLoader:
    """Padded batches of utterances, shuffled per epoch (seeded) if asked. `by_length` groups
    similar lengths (see :class:`EpochBatches`): less padding, so fewer wasted frames; its
    `sampler` lists each batch's utterance indices for callers that need to know which
    utterances a batch holds. `shard` splits every batch across DDP ranks (training only: the
    other passes read everything in every rank). Pinned memory when a GPU will read the batches
    (faster, asynchronous host-to-device copies)."""
    lengths = [u.num_samples for u in utterances] if by_length else None
    sampler = EpochBatches(len(utterances), batch_size, shuffle, seed, shard=shard, lengths=lengths)
    return DataLoader(
        UtteranceBatches(utterances, sample_rate),
        sampler=sampler,
        batch_size=None,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
