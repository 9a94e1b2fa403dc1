"""Batches of cached positions: every view's state and every offset's target in one read."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from memsig.distributed import shard
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


class EpochBatches(Sampler[list[int]]):
    """Batches of indices; when shuffled, epoch e's order depends only on (seed, e), so a run
    resumed from a checkpoint sees the same batches as one that never stopped.

    With `shard` under DDP every batch is split across the ranks (rank r takes items r,
    r + world, ...): together they see each position once, and their averaged gradients are
    the gradient of the whole batch, as in a single process. A batch smaller than the world
    size is dropped (no rank may get an empty batch)."""

    def __init__(
        self, size: int, batch_size: int, shuffle: bool, seed: int = 0, shard: bool = True
    ) -> None:
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.shard = shard
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def _world(self) -> tuple[int, int]:
        return shard() if self.shard else (0, 1)

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        return full + (rest >= self._world()[1])

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        rank, world = self._world()
        for chunk in order.split(self.batch_size):
            if len(chunk) >= world:
                yield chunk[rank::world].tolist()


def position_loader(
    dataset: PositionBatches, batch_size: int, shuffle: bool, seed: int = 0, shard: bool = True
) -> DataLoader:
    """Whole batches are read at once (sorted positions), shuffled per epoch if asked, split
    across DDP ranks unless `shard=False` (a pass every rank makes over all the data)."""
    sampler = EpochBatches(len(dataset), batch_size, shuffle, seed, shard)
    return DataLoader(
        dataset, sampler=sampler, batch_size=None, pin_memory=torch.cuda.is_available()
    )


def targets_of(dataset: PositionBatches) -> np.ndarray:
    """All targets [positions, offsets] of a dataset (for the prior baselines)."""
    return offset_targets(dataset.tokens, np.asarray(dataset.positions), dataset.offsets)
