"""Batches of cached positions: every view's state and every offset's target in one read."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from memsig.distributed import shard
from memsig.probes.offsets import offset_targets


class PositionBatches(Dataset):
    """Index with a list of positions; returns ({view: [b, D]}, targets [b, offsets]).

    The target of position t at offset k is tokens[anchor(t) - k], where anchor(t) is t itself
    (a token stream) or anchors[t] (a frame's current grapheme, for speech). With `labels`
    ([offsets, symbols]), offset j's target x becomes labels[j, x]: a relabelling of the same
    index shifts (the control tasks)."""

    def __init__(
        self,
        views: Mapping[str, np.ndarray],
        tokens: np.ndarray,
        positions: np.ndarray,
        offsets: np.ndarray,
        anchors: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        self.views = views
        self.tokens = np.asarray(tokens, dtype=np.int64)
        self.positions = positions
        self.offsets = offsets
        self.anchors = anchors
        self.labels = labels

    def replaced(self, **changes) -> PositionBatches:
        """The same dataset (subclasses included) with some fields changed: positions,
        labels, ..."""
        out = copy.copy(self)
        vars(out).update(changes)
        return out

    def anchor(self, positions: np.ndarray) -> np.ndarray:
        """Where in `tokens` offset 0 of each position points."""
        return positions if self.anchors is None else self.anchors[positions]

    def targets(self, positions: np.ndarray) -> np.ndarray:
        """Targets [len(positions), offsets] (relabelled when the dataset has labels)."""
        symbols = offset_targets(self.tokens, self.anchor(positions), self.offsets)
        if self.labels is None:
            return symbols
        return np.take_along_axis(self.labels.T, symbols, axis=0)

    def __len__(self) -> int:
        return len(self.positions)

    def batch_positions(self, index: list[int]) -> np.ndarray:
        """The positions a batch of indices reads, sorted (as the features are returned)."""
        return np.sort(self.positions[np.asarray(index)])

    def __getitem__(self, index: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        pos = self.batch_positions(index)
        features = {
            v: torch.from_numpy(np.asarray(a[pos], dtype=np.float32)) for v, a in self.views.items()
        }
        targets = torch.from_numpy(self.targets(pos))
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
    return dataset.targets(np.asarray(dataset.positions))
