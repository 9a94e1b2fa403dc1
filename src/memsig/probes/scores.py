"""Per view x offset test statistics, as a torchmetrics metric so ranks reduce correctly."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from memsig.units import nats_to_bits


class HeadScores(Metric):
    """Summed cross-entropy (nats) and correct predictions for every view x offset head."""

    full_state_update = False

    def __init__(self, num_views: int, num_offsets: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        shape, by_symbol = (num_views, num_offsets), (num_views, num_offsets * num_classes)
        for name, size in (("nll", shape), ("correct", shape), ("correct_by_symbol", by_symbol)):
            self.add_state(name, torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")
        count_shape = (num_offsets * num_classes,)
        self.add_state(
            "count_by_symbol", torch.zeros(count_shape, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, nll: torch.Tensor, correct: torch.Tensor, targets: torch.Tensor) -> None:
        """nll, correct: [views, batch, offsets]; targets: [batch, offsets]."""
        self.nll += nll.sum(1).double()
        self.correct += correct.sum(1).double()
        self.count += nll.shape[1]
        offsets = torch.arange(targets.shape[1], device=targets.device)
        index = (targets + offsets * self.num_classes).reshape(-1)  # (offset, symbol) bins
        self.count_by_symbol.index_add_(0, index, torch.ones_like(index, dtype=torch.float64))
        hits = correct.reshape(len(correct), -1).double()
        self.correct_by_symbol.index_add_(1, index, hits)

    def compute(self) -> dict[str, torch.Tensor]:
        """Accuracy and cross-entropy per view x offset; correct predictions and counts per
        offset x target symbol (from which any class of symbols gets its accuracy)."""
        return self.results()

    def results(self) -> dict[str, torch.Tensor]:
        """What `compute` gives, in these shapes even for one view x one offset (torchmetrics
        squeezes one-element results of `compute` to scalars)."""
        offsets = self.nll.shape[1]
        return {
            "xent_bits": nats_to_bits(self.nll / self.count),
            "accuracy": self.correct / self.count,
            "correct_by_symbol": self.correct_by_symbol.view(-1, offsets, self.num_classes),
            "count_by_symbol": self.count_by_symbol.view(offsets, self.num_classes),
        }


def head_losses(logits: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (nats) [views, batch, offsets] of each view's logits [batch, offsets,
    classes]. Views are scored one by one: cheaper than stacking every view's logits."""
    return torch.stack(
        [F.cross_entropy(z.permute(0, 2, 1), targets, reduction="none") for z in logits]
    )


def head_statistics(
    logits: list[torch.Tensor], targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What HeadScores.update takes: cross-entropy, hits, and the targets."""
    hits = torch.stack([z.argmax(-1) == targets for z in logits])
    return head_losses(logits, targets), hits, targets
