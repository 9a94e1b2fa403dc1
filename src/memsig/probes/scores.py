"""Per view x offset test statistics, as a torchmetrics metric so ranks reduce correctly."""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric

LN2 = math.log(2.0)


class HeadScores(Metric):
    """Summed cross-entropy (nats) and correct predictions for every view x offset head."""

    full_state_update = False

    def __init__(self, num_views: int, num_offsets: int) -> None:
        super().__init__()
        shape = (num_views, num_offsets)
        self.add_state("nll", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("correct", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, nll: torch.Tensor, correct: torch.Tensor) -> None:
        """nll, correct: [views, batch, offsets]."""
        self.nll += nll.sum(1).double()
        self.correct += correct.sum(1).double()
        self.count += nll.shape[1]

    def compute(self) -> dict[str, torch.Tensor]:
        return {"xent_bits": self.nll / self.count / LN2, "accuracy": self.correct / self.count}
