"""Batches of cached positions: every view's state and every offset's target in one read."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from memsig.data.batches import EpochBatches
from memsig.extraction.offsets import offset_targets

# ({view: states [b, D]}, targets [b, offsets], rows [b]: each row's index in the positions)
Batch = tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]


class PositionBatches(Dataset):
    """Index with a list of positions; returns ({view: [b, D]}, targets [b, offsets], rows
    [b]): each row's index in `positions` travels with it, so sums kept per row or per
    document are right whatever share of a batch a DDP rank reads.

    The target of position t at offset k is tokens[anchor(t) - k], where anchor(t) is t itself
    (a token stream) or anchors[t] (a frame's current grapheme, for speech). With `labels`
    ([offsets, symbols]), offset j's target x becomes labels[j, x]: a relabelling of the same
    index shifts (the control tasks).

    The targets of all positions are built once, on first use, and kept (`all_targets`): every
    batch of every epoch, the prior guard, the baselines and the intervals read rows of the
    same matrix, which at many offsets is large."""

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
        self._all_targets: np.ndarray | None = None

    def replaced(self, **changes) -> PositionBatches:
        """The same dataset (subclasses included) with some fields changed: positions,
        labels, ... (its targets are built anew)."""
        out = copy.copy(self)
        vars(out).update({"_all_targets": None, **changes})
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

    def all_targets(self) -> np.ndarray:
        """Targets [len(self), offsets] of every position, in the order of `positions`: built
        on the first call, then shared (callers must not modify it)."""
        if self._all_targets is None:
            self._all_targets = self.targets(np.asarray(self.positions))
        return self._all_targets

    def __len__(self) -> int:
        return len(self.positions)

    def batch_rows(self, index: list[int]) -> np.ndarray:
        """The rows (indices into `positions`) a batch of indices reads, in the order of their
        positions (the order features are read and returned in)."""
        index = np.asarray(index, dtype=np.int64)
        return index[np.argsort(self.positions[index], kind="stable")]

    def __getitem__(self, index: list[int]) -> Batch:
        rows = self.batch_rows(index)
        pos = self.positions[rows]
        features = {
            v: torch.from_numpy(np.asarray(a[pos], dtype=np.float32)) for v, a in self.views.items()
        }
        targets = torch.from_numpy(self.all_targets()[rows])
        return features, targets, torch.from_numpy(rows)


def position_loader(
    dataset: PositionBatches,
    batch_size: int,
    shuffle: bool,
    *,
    shard: bool,
    seed: int = 0,
    min_steps: int = 1,
) -> DataLoader:
    """Whole batches are read at once (sorted positions), shuffled per epoch if asked. With
    `shard` every batch is split across DDP ranks, and whatever sums the ranks keep must be
    reduced over them; without, every rank makes the whole pass (and reduces nothing). A
    shuffled epoch makes as many passes as it takes to reach `min_steps` batches."""
    passes = 1
    if shuffle:
        per_pass = max(1, -(-len(dataset) // batch_size))
        passes = max(1, -(-min_steps // per_pass))
    sampler = EpochBatches(len(dataset), batch_size, shuffle, seed, shard=shard, passes=passes)
    return DataLoader(
        dataset, sampler=sampler, batch_size=None, pin_memory=torch.cuda.is_available()
    )


def targets_of(dataset: PositionBatches) -> np.ndarray:
    """All targets [positions, offsets] of a dataset (for the prior baselines), built once per
    dataset."""
    return dataset.all_targets()
