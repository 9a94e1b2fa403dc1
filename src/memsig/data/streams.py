"""Contiguous token streams cut into truncated-BPTT chunks, in order, so state can be carried."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from memsig.runtime.distributed import shard
from memsig.runtime.errors import ConfigError

IGNORE = -100  # label of a step without a target (cross_entropy's default ignore_index)


class StreamChunks(Dataset):
    """Item i is chunk i of `rows` parallel streams: inputs and their labels, [rows, T].

    The label at step t is the token at offset `target` (extraction/offsets.py): -1 the next token
    (language modelling), d >= 0 the input d steps back (delayed copy; IGNORE in a row's first
    d steps, whose source the row's model has not read).
    The stream is cut into `rows` contiguous pieces (one per batch row) and read left to right,
    so the state a model returns for chunk i is the right starting state for chunk i + 1.
    """

    def __init__(
        self, tokens: np.ndarray, rows: int, seq_len: int, target: int = -1, *, shard: bool
    ) -> None:
        self.shard = shard
        ahead = max(0, -target)
        usable = (len(tokens) - ahead) // rows
        if usable < 1:
            raise ConfigError(
                f"a stream of {len(tokens)} tokens cannot feed {rows} parallel rows: "
                "lower model.training.batch_size or use more data"
            )
        self.seq_len = seq_len
        data = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
        steps = torch.arange(rows * usable)
        known = steps % usable >= target
        labels = torch.where(known, data[(steps - target).clamp_min(0)], IGNORE)
        self.inputs = data[steps].view(rows, usable)
        self.targets = labels.view(rows, usable)

    def __len__(self) -> int:
        return -(-self.inputs.shape[1] // self.seq_len)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunk i; with `shard`, under DDP each rank gets its own rows (rank, rank + world,
        ...), so the ranks together take the same step as one process with every row (and
        metrics summed over them cover every row once)."""
        window = slice(i * self.seq_len, (i + 1) * self.seq_len)
        rank, world = shard() if self.shard else (0, 1)
        rows = slice(rank, None, world)
        return self.inputs[rows, window], self.targets[rows, window]


def stream_loader(
    tokens: np.ndarray, rows: int, seq_len: int, target: int = -1, *, shard: bool
) -> DataLoader:
    """An ordered loader of whole chunks (no shuffling: chunk order carries the state); pinned
    memory when a GPU will read the batches (faster, asynchronous host-to-device copies).
    No worker processes: chunks are slices of one in-memory tensor, cheaper than any IPC."""
    return DataLoader(
        StreamChunks(tokens, rows, seq_len, target, shard=shard),
        batch_size=None,
        shuffle=False,
        pin_memory=torch.cuda.is_available(),
    )
