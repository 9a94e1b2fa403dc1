"""What every probe kind does with the class prior of its fit block, so that a head never
scores worse than knowing nothing (the prior) by more than noise.

- Symbols unseen among an offset's fit targets never enter a head: a head's softmax runs
  over the seen symbols only, and each unseen symbol keeps the probability the prior gives it
  (the add-one smoothed frequency of probe/baselines.py, 1 / (n + V)). Unmasked, a head pushes
  an unseen class's logit down without bound and pays for it wherever the symbol turns up.
- A head whose validation cross-entropy is worse than the prior's is replaced by the prior
  (a model selection on the validation block, like the choice of its L2 strength).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from memsig.probes.baselines import class_prior, prior_code_bits


class PriorGuard(nn.Module):
    """The prior of every offset, which symbols the fit block has, and which heads the prior
    replaces ([views, offsets], set by `settle` once the heads are chosen)."""

    def __init__(
        self,
        num_views: int,
        num_classes: int,
        fit_targets: np.ndarray,
        val_targets: np.ndarray | None = None,
    ) -> None:
        """fit_targets, val_targets: [positions, offsets]. Without validation targets the
        prior never replaces a head."""
        super().__init__()
        prior = class_prior(fit_targets, num_classes)  # [offsets, classes]
        seen = np.stack([np.bincount(c, minlength=num_classes) > 0 for c in fit_targets.T])
        unseen_mass = np.where(seen, 0.0, prior).sum(1)
        self.register_buffer("log_prior", torch.as_tensor(np.log(prior), dtype=torch.float32))
        self.register_buffer("seen", torch.as_tensor(seen))
        self.register_buffer("log_seen_mass", torch.as_tensor(np.log1p(-unseen_mass)).float())
        val_bits = (
            np.full(len(prior), np.inf)
            if val_targets is None
            else prior_code_bits(prior, val_targets).mean(0)
        )
        self.register_buffer("prior_val_bits", torch.as_tensor(val_bits, dtype=torch.float32))
        self.register_buffer("use_prior", torch.zeros(num_views, len(prior), dtype=torch.bool))
        self.partial = not bool(seen.all())  # some symbol unseen at some offset

    @classmethod
    def neutral(cls, num_views: int, num_offsets: int, num_classes: int) -> PriorGuard:
        """A guard that changes nothing: every symbol seen, no validation prior."""
        every = np.tile(np.arange(num_classes), (num_offsets, 1)).T
        return cls(num_views, num_classes, every)

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits [..., offsets, classes] -> log-probabilities with unseen symbols at their
        prior (unchanged logits when every symbol was seen)."""
        if not self.partial:
            return logits
        seen_part = logits.masked_fill(~self.seen, -torch.inf).log_softmax(-1)
        return torch.where(self.seen, seen_part + self.log_seen_mass[:, None], self.log_prior)

    def settle(self, val_bits: torch.Tensor) -> None:
        """Replace by the prior every head ([views, offsets]) whose validation cross-entropy
        (bits) is worse than the prior's."""
        self.use_prior.copy_(val_bits.to(self.prior_val_bits) > self.prior_val_bits)

    def guarded(self, index: int, logits: torch.Tensor) -> torch.Tensor:
        """View `index`'s final scores [batch, offsets, classes]: unseen symbols at their
        prior, and the prior itself where it replaces the head."""
        scores = self.log_probs(logits)
        return torch.where(self.use_prior[index][:, None], self.log_prior, scores)
