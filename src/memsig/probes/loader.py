"""Batches of cached positions: every view's state and every offset's target in one read."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from memsig.probes.offsets import offset_targets


class PositionBatches(Dataset):
    """Index with a list of positions; returns ({view: [b, D]}, targets [b, offsets])."""

    def __init__(
        self,
        views: Mapping[str, np.ndarray],
        tokens: np.ndarray,
        positions: np.ndarray,
        offsets: np.ndarray,
    ) -> None:
        self.views = views
        self.tokens = np.asarray(tokens, dtype=np.int64)
        self.positions = positions
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        pos = np.sort(self.positions[np.asarray(index)])
        features = {
            v: torch.from_numpy(np.asarray(a[pos], dtype=np.float32)) for v, a in self.views.items()
        }
        targets = torch.from_numpy(offset_targets(self.tokens, pos, self.offsets))
        return features, targets


def position_loader(
    dataset: PositionBatches, batch_size: int, shuffle: bool, seed: int = 0
) -> DataLoader:
    """Whole batches are read at once (sorted positions), shuffled across epochs if asked."""
    if shuffle:
        order = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    else:
        order = SequentialSampler(dataset)
    sampler = BatchSampler(order, batch_size=batch_size, drop_last=False)
    return DataLoader(dataset, sampler=sampler, batch_size=None)


def targets_of(dataset: PositionBatches) -> np.ndarray:
    """All targets [positions, offsets] of a dataset (for the prior baselines)."""
    return offset_targets(dataset.tokens, np.asarray(dataset.positions), dataset.offsets)
