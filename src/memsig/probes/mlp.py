"""One-hidden-layer MLP decoders for every view x offset, computed fused.

Each head (offset x L2 strength) has its own MLP (its own hidden layer), but all heads' first
layers are one matmul and all second layers one batched matmul, so the number of kernel
launches does not grow with the number of offsets.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from memsig.probes.multi_offset import FusedProbe


class OffsetMLPs(nn.Module):
    """Independent MLPs dim -> hidden -> classes, one per offset; parameters [offsets, ...]."""

    def __init__(self, dim: int, hidden: int, num_offsets: int, num_classes: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(_uniform((num_offsets, dim, hidden), dim))
        self.b1 = nn.Parameter(_uniform((num_offsets, hidden), dim))
        self.w2 = nn.Parameter(_uniform((num_offsets, hidden, num_classes), hidden))
        self.b2 = nn.Parameter(_uniform((num_offsets, num_classes), hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, dim] -> logits [batch, offsets, classes]."""
        hidden = torch.einsum("bd,kdh->bkh", x, self.w1) + self.b1
        return torch.einsum("bkh,khc->bkc", hidden.relu(), self.w2) + self.b2


def _uniform(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
    """nn.Linear's default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return torch.empty(shape).uniform_(-bound, bound)


class MLPProbe(FusedProbe):
    """Non-linear decoders: what a small MLP can read from a state, that a linear one cannot."""

    weight_names = ("w1", "w2")
    input_axis = {"w1": 1}

    def __init__(self, *args, hidden: int, **kwargs) -> None:
        self.hidden = hidden
        super().__init__(*args, **kwargs)

    def build_head(self, dim: int) -> nn.Module:
        return OffsetMLPs(dim, self.hidden, self.num_heads, self.num_classes)

    def head_logits(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self.heads[index](self.whitened(index, x))
