"""Batches of item indices for the loaders: seeded per epoch, split across DDP ranks, and for
items of unequal length (utterances) grouped by length so that padding wastes little work."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch.utils.data import Sampler

from memsig.runtime.distributed import shard

# Shuffled batches by length are formed inside pools of this many batches: enough items to
# find similar lengths, few enough that a batch still mixes a random part of the data.
POOL_BATCHES = 50


class EpochBatches(Sampler[list[int]]):
    """Batches of indices; when shuffled, epoch e's order depends only on (seed, e), so a run
    resumed from a checkpoint sees the same batches as one that never stopped.

    With `lengths`, batches hold items of similar length: shuffled, the epoch's random order is
    cut into pools of :data:`POOL_BATCHES` batches, each pool sorted by length and cut into
    batches, and the batches are shuffled; unshuffled, all items are sorted longest first (the
    largest batch comes first, so running out of memory shows at once).

    With `shard` under DDP every batch is split across the ranks (rank r takes items r,
    r + world, ...): together they see each position once, and their averaged gradients are
    the gradient of the whole batch, as in a single process. A shuffled (training) batch
    smaller than the world size is dropped (no rank may average a gradient over nothing); an
    unshuffled pass (scoring) keeps every item, and a rank may then get an empty last batch,
    so that the ranks' sums add up to the whole pass.

    With `passes` > 1 (shuffled items of equal length only) an epoch is that many shuffled
    passes in a row: a small training set still gets enough optimiser steps per epoch."""

    def __init__(
        self,
        size: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        *,
        shard: bool,
        lengths: Sequence[int] | None = None,
        passes: int = 1,
    ) -> None:
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.passes = passes  # shuffled passes over the items per epoch (equal-length items)
        self.shard = shard
        self.lengths = None if lengths is None else torch.as_tensor(lengths)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def _world(self) -> tuple[int, int]:
        return shard() if self.shard else (0, 1)

    def _smallest(self) -> int:
        """The fewest items a batch may hold before it is split across the ranks."""
        return self._world()[1] if self.shuffle else 1

    def __len__(self) -> int:
        full, rest = divmod(self.size * self.passes, self.batch_size)
        return full + (rest >= self._smallest())

    def _batches(self) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.shuffle:
            order = torch.cat(
                [torch.randperm(self.size, generator=generator) for _ in range(self.passes)]
            )
        else:
            order = torch.arange(self.size)
        if self.lengths is None:
            return list(order.split(self.batch_size))
        pool = self.batch_size * POOL_BATCHES if self.shuffle else max(self.size, 1)
        order = torch.cat(
            [p[self.lengths[p].argsort(descending=True, stable=True)] for p in order.split(pool)]
        )
        batches = list(order.split(self.batch_size))
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = self._world()
        for chunk in self._batches():
            if len(chunk) >= self._smallest():
                yield chunk[rank::world].tolist()


def padding_fraction(batches: Iterable[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of a padded epoch that is padding: 1 - real samples / (batch size x longest)."""
    lengths = torch.as_tensor(lengths)
    real = padded = 0
    for batch in batches:
        sizes = lengths[torch.as_tensor(batch)]
        real += int(sizes.sum())
        padded += len(sizes) * int(sizes.max())
    return 1.0 - real / padded
