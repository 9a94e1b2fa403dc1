"""Batches of whole utterances: padded waveforms, transcripts, and the true lengths of both."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from memsig.data.speech import Utterance, load_audio

Batch = tuple[Tensor, Tensor, Tensor, Tensor]  # waves [B, S], lengths [B], targets [B, L], lengths


class UtteranceAudio(Dataset):
    """Item i: utterance i's samples and grapheme ids, read from disk when asked for."""

    def __init__(self, utterances: Sequence[Utterance], sample_rate: int) -> None:
        self.utterances, self.sample_rate = list(utterances), sample_rate

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        utterance = self.utterances[i]
        return load_audio(utterance, self.sample_rate), utterance.tokens


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


def utterance_loader(
    utterances: Sequence[Utterance],
    sample_rate: int,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    workers: int = 0,
) -> DataLoader:
    """Utterances in corpus order (or shuffled per epoch, seeded), padded per batch."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        UtteranceAudio(utterances, sample_rate),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=pad_batch,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
