"""One Lightning module that trains a linear softmax head for every view x offset at once.

Each view has a single linear layer whose outputs are all offsets' logits, so the cost is one
matmul per view whatever the number of offsets. Every head keeps the weights of its own best
validation epoch, so a head that starts to overfit does not spoil the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from memsig.errors import ConfigError, NumericalError
from memsig.probes.scores import HeadScores


class MultiOffsetProbe(L.LightningModule):
    """Linear decoders from whitened state views to the input at every offset."""

    def __init__(
        self,
        view_dims: Mapping[str, int],
        num_offsets: int,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        mean: Mapping[str, np.ndarray],
        cov: Mapping[str, np.ndarray],
    ) -> None:
        super().__init__()
        self.views = list(view_dims)
        self.num_offsets = num_offsets
        self.num_classes = num_classes
        self.optimizer_factory = optimizer
        self.heads = nn.ModuleList(
            nn.Linear(view_dims[v], num_offsets * num_classes) for v in self.views
        )
        for i, v in enumerate(self.views):
            self.register_buffer(f"mean{i}", torch.as_tensor(mean[v], dtype=torch.float32))
            self.register_buffer(f"whiten{i}", whitening(cov[v]))
        for i, head in enumerate(self.heads):
            self.register_buffer(f"best_weight{i}", head.weight.detach().clone())
            self.register_buffer(f"best_bias{i}", head.bias.detach().clone())
        self.register_buffer("best_val_xent", torch.full((len(self.views), num_offsets), np.inf))
        self.val_scores = HeadScores(len(self.views), num_offsets, num_classes)
        self.test_scores = HeadScores(len(self.views), num_offsets, num_classes)
        self.test_results: dict[str, torch.Tensor] | None = None

    def logits(self, features: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Per view, logits [batch, offsets, classes]."""
        out = []
        for i, v in enumerate(self.views):
            x = (features[v].float() - getattr(self, f"mean{i}")) @ getattr(self, f"whiten{i}")
            out.append(self.heads[i](x).view(len(x), self.num_offsets, self.num_classes))
        return out

    @torch.no_grad()
    def warm_start(self, batches) -> None:
        """Start every head at the linear discriminant of its offset, from one pass over the
        training batches: in whitened space the class means are the weights and
        log prior - |mean|^2 / 2 the biases. Gradient training then only refines, so it
        stops after a few epochs whatever the number of offsets."""
        rows = self.num_offsets * self.num_classes
        sums = [torch.zeros(rows, head.in_features, dtype=torch.float64) for head in self.heads]
        counts = torch.zeros(rows, dtype=torch.float64)
        for features, targets in batches:
            onehot = F.one_hot(targets, self.num_classes).reshape(len(targets), rows).float()
            counts += onehot.sum(0).double()
            for i, v in enumerate(self.views):
                x = (features[v].float() - getattr(self, f"mean{i}")) @ getattr(self, f"whiten{i}")
                sums[i] += (onehot.T @ x).double()  # class sums for every offset in one matmul
        total = counts.view(self.num_offsets, self.num_classes).sum(1, keepdim=True)
        log_prior = (counts.view(self.num_offsets, -1) / total).clamp_min(1e-9).log().reshape(-1)
        for head, total_x in zip(self.heads, sums, strict=True):
            means = total_x / counts.clamp_min(1).unsqueeze(1)
            head.weight.copy_(means)
            head.bias.copy_(log_prior - 0.5 * means.square().sum(1))

    def _nll(self, batch) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Cross-entropy (nats) [views, b, offsets], each view's logits, and the targets.
        Views are scored one by one: cheaper than stacking every view's logits."""
        features, targets = batch
        logits = self.logits(features)
        nll = [F.cross_entropy(z.permute(0, 2, 1), targets, reduction="none") for z in logits]
        return torch.stack(nll), logits, targets

    def _scores(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What HeadScores counts: cross-entropy, hits, and the targets."""
        nll, logits, targets = self._nll(batch)
        return nll, torch.stack([z.argmax(-1) == targets for z in logits]), targets

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        nll = self._nll(batch)[0]
        loss = nll.mean(1).sum()
        if not torch.isfinite(loss):
            raise NumericalError(
                f"the probe loss became {loss.item()} at step {self.global_step}: "
                "lower probe.optimizer.lr"
            )
        self.log("probe/train/loss", nll.mean(), prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self.val_scores.update(*self._scores(batch))

    def on_validation_epoch_end(self) -> None:
        xent = self.val_scores.compute()["xent_bits"].to(self.best_val_xent)
        self.val_scores.reset()
        self.keep_best(xent)
        # already reduced over DDP ranks by the metric: sync_dist only confirms the same value
        self.log("probe/val/xent_bits", xent.mean(), sync_dist=True)
        self.log(
            "probe/val/best_xent_bits", self.best_val_xent.mean(), prog_bar=True, sync_dist=True
        )

    @torch.no_grad()
    def keep_best(self, xent: torch.Tensor) -> None:
        """Snapshot the weights of every head whose validation cross-entropy ([views, offsets],
        bits) beats its best so far; the other heads keep their earlier snapshot."""
        improved = xent < self.best_val_xent
        self.best_val_xent = torch.where(improved, xent, self.best_val_xent)
        for i, head in enumerate(self.heads):
            rows = improved[i].repeat_interleave(self.num_classes)
            getattr(self, f"best_weight{i}")[rows] = head.weight[rows]
            getattr(self, f"best_bias{i}")[rows] = head.bias[rows]

    def use_best_weights(self) -> None:
        """Load every head's best-validation weights (called before testing)."""
        with torch.no_grad():
            for i, head in enumerate(self.heads):
                head.weight.copy_(getattr(self, f"best_weight{i}"))
                head.bias.copy_(getattr(self, f"best_bias{i}"))

    def on_test_start(self) -> None:
        if torch.isfinite(self.best_val_xent).all():
            self.use_best_weights()

    def test_step(self, batch, batch_idx: int) -> None:
        self.test_scores.update(*self._scores(batch))

    def on_test_epoch_end(self) -> None:
        self.test_results = {k: v.cpu() for k, v in self.test_scores.compute().items()}
        self.test_scores.reset()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=self.heads.parameters())


def whitening(cov: np.ndarray, floor: float = 1e-6) -> torch.Tensor:
    """ZCA whitening matrix C^(-1/2); directions without variance (relative to the largest)
    carry no information and are dropped.

    A linear probe on whitened features has the same hypothesis class as on raw ones, but the
    optimisation is well conditioned, so heads converge in few epochs even when units are
    strongly correlated (as recurrent states are)."""
    values, vectors = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    keep = values > floor * max(values.max(), 0.0)
    scale = np.where(keep, 1.0 / np.sqrt(np.where(keep, values, 1.0)), 0.0)
    return torch.as_tensor((vectors * scale) @ vectors.T, dtype=torch.float32)


def probe_views(available: Mapping[str, int], requested: Sequence[str] | None) -> dict[str, int]:
    """The views to probe, in the model's order; unknown names are a clear error."""
    if requested is None:
        return dict(available)
    unknown = [v for v in requested if v not in available]
    if unknown:
        raise ConfigError(
            f"probe.views names {unknown}, which the model does not have; "
            f"available views: {list(available)}"
        )
    return {v: available[v] for v in available if v in requested}
