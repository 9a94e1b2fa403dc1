"""Closed-form ridge probe: every view x offset decoder from one pass over the cached states.

Each decoder regresses the one-hot target x_{t-k} on the standardised state with an
unpenalised intercept and a ridge penalty `strength * n` (n fit positions; the features have
unit variance, so a strength compares to the eigenvalues of the states' correlation matrix),
and classifies by argmax. One pass over the fit positions gathers, per view, the Gram matrix and
the state-target cross moments of every offset at once; one eigendecomposition of the Gram
matrix then gives the solution for every strength at the cost of a small matrix product.

Selection, on the validation block:
- the strength, per view x offset: the one with the least squared error (the ridge objective),
  computed for every strength from the validation block's own moments (one more pass);
- probabilities, for cross-entropy and information: the ridge scores s (which estimate the class
  probabilities linearly) become softmax(s / T), with one temperature T per view x offset fitted
  by maximum likelihood on validation (a coarse geometric grid, then a fine one around each
  head's best). Temperature scaling never changes the argmax, so accuracy is the ridge's own;
- the prior guard (probes/prior_guard.py): symbols unseen in the fit block keep their prior
  probability, and the prior replaces a head it beats on validation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from memsig.probes.prior_guard import PriorGuard
from memsig.probes.scores import TestScoring, head_statistics
from memsig.runtime.distributed import all_reduce_sum
from memsig.runtime.units import nats_to_bits

# inverse temperatures tried: 2^(-2) .. 2^12 in steps of 2^(1/2), then 2^(+-1/16 .. 1/2) around
# each head's best
COARSE_INVERSE_TEMPERATURES = 2.0 ** np.arange(-2.0, 12.01, 0.5)
FINE_STEPS = 2.0 ** np.arange(-0.5, 0.51, 1 / 16)


@dataclass
class Moments:
    """Sums over positions of one view's standardised states x and one-hot targets y (every
    offset's V columns side by side), float64: n, sum x, sum x x^T, sum x y^T, sum y."""

    count: float
    sum_x: torch.Tensor
    gram: torch.Tensor
    cross: torch.Tensor
    sum_y: torch.Tensor

    def centred(self, mean_x: torch.Tensor, mean_y: torch.Tensor):
        """Gram and cross moments about (mean_x, mean_y), and sum ||y - mean_y||^2 per column."""
        gram = (
            self.gram
            - torch.outer(mean_x, self.sum_x)
            - torch.outer(self.sum_x, mean_x)
            + self.count * torch.outer(mean_x, mean_x)
        )
        cross = (
            self.cross
            - torch.outer(mean_x, self.sum_y)
            - torch.outer(self.sum_x, mean_y)
            + self.count * torch.outer(mean_x, mean_y)
        )
        # y is 0/1, so sum y^2 = sum y
        square_y = self.sum_y - 2 * mean_y * self.sum_y + self.count * mean_y.square()
        return gram, cross, square_y


class RidgeProbe(TestScoring, nn.Module):
    """Ridge decoders for every view x offset; after `fit`, a linear map to logits per view."""

    def __init__(
        self,
        view_dims: Mapping[str, int],
        num_offsets: int,
        num_classes: int,
        mean: Mapping[str, np.ndarray],
        cov: Mapping[str, np.ndarray],
        strengths: Sequence[float],
        guard: PriorGuard | None = None,
    ) -> None:
        super().__init__()
        self.guard = guard or PriorGuard.neutral(len(view_dims), num_offsets, num_classes)
        self.views = list(view_dims)
        self.num_offsets = num_offsets
        self.num_classes = num_classes
        self.strengths = [float(s) for s in strengths]
        width = num_offsets * num_classes
        for i, v in enumerate(self.views):
            variance = torch.as_tensor(np.diag(cov[v]).copy(), dtype=torch.float32)
            scale = torch.where(variance > 0, variance.clamp_min(1e-30).rsqrt(), 0.0)
            self.register_buffer(f"center{i}", torch.as_tensor(mean[v], dtype=torch.float32))
            self.register_buffer(f"scale{i}", scale)
            self.register_buffer(f"weight{i}", torch.zeros(view_dims[v], width))
            self.register_buffer(f"bias{i}", torch.zeros(width))
        shape = (len(self.views), num_offsets)
        self.register_buffer("best_val_xent", torch.full(shape, np.inf))
        self.register_buffer("strength", torch.zeros(shape))
        self.register_buffer("temperature", torch.ones(shape))
        self.test_results: dict[str, torch.Tensor] | None = None

    def standardised(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - getattr(self, f"center{index}")) * getattr(self, f"scale{index}")

    def scores(self, features: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Per view, the (temperature-scaled) ridge scores [batch, offsets, classes]."""
        out = []
        for i, v in enumerate(self.views):
            x = self.standardised(i, features[v])
            z = torch.addmm(getattr(self, f"bias{i}"), x, getattr(self, f"weight{i}"))
            out.append(z.view(len(x), self.num_offsets, self.num_classes))
        return out

    def logits(self, features: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Per view, logits [batch, offsets, classes]: the scores through the prior guard."""
        return [self.guard.guarded(i, z) for i, z in enumerate(self.scores(features))]

    @torch.no_grad()
    def fit(self, fit_batches: Iterable, val_batches: Iterable) -> None:
        """Solve every view x offset x strength from the fit block's moments, pick each head's
        strength and temperature on the validation block."""
        fit, val = self._moments(fit_batches), self._moments(val_batches)
        v_cols = self.num_classes
        for i in range(len(self.views)):
            mean_x, mean_y = fit[i].sum_x / fit[i].count, fit[i].sum_y / fit[i].count
            gram, cross, _ = fit[i].centred(mean_x, mean_y)
            values, vectors = torch.linalg.eigh(gram)
            values = values.clamp_min(0)
            rotated = vectors.T @ cross  # [D, K*V]: the cross moments in the eigenbasis
            val_gram, val_cross, val_square = val[i].centred(mean_x, mean_y)
            val_gram = vectors.T @ val_gram @ vectors
            val_cross = vectors.T @ val_cross
            errors = []  # validation squared error per strength, per offset
            for strength in self.strengths:
                solution = rotated * _inverse(values + strength * fit[i].count).unsqueeze(1)
                quad = (solution * (val_gram @ solution)).sum(0)
                error = val_square - 2 * (solution * val_cross).sum(0) + quad
                errors.append(error.view(self.num_offsets, v_cols).sum(1))
            best = torch.stack(errors).argmin(0)  # [offsets]
            chosen = torch.as_tensor(self.strengths, dtype=values.dtype, device=values.device)
            self.strength[i] = chosen[best].to(self.strength)
            penalty = (chosen[best] * fit[i].count).repeat_interleave(v_cols)  # per column
            solution = rotated * _inverse(values.unsqueeze(1) + penalty.unsqueeze(0))
            weight = vectors @ solution
            getattr(self, f"weight{i}").copy_(weight)
            getattr(self, f"bias{i}").copy_(mean_y - mean_x @ weight)
        self._fit_temperatures(val_batches)

    @torch.no_grad()
    def _moments(self, batches: Iterable) -> list[Moments]:
        """One pass: every view's moments; the one-hot targets of all offsets enter as one
        sparse matrix, so the cross moments cost n * offsets * D, not n * offsets * V * D.
        Under DDP each rank passes over its share of the batches and the sums are added."""
        device = self.best_val_xent.device
        width = self.num_offsets * self.num_classes
        wide = {"dtype": torch.float64, "device": device}
        moments = [
            Moments(
                0.0,
                torch.zeros(d, **wide),
                torch.zeros(d, d, **wide),
                torch.zeros(d, width, **wide),
                torch.zeros(width, **wide),
            )
            for d in (getattr(self, f"center{i}").numel() for i in range(len(self.views)))
        ]
        offsets = torch.arange(self.num_offsets, device=device) * self.num_classes
        for features, targets, _ in batches:
            targets = targets.to(device)
            columns = (targets + offsets).reshape(-1)
            rows = torch.arange(len(targets), device=device).repeat_interleave(self.num_offsets)
            onehot_t = torch.sparse_coo_tensor(
                torch.stack([columns, rows]),
                torch.ones(len(columns), **wide),
                (width, len(targets)),
                check_invariants=False,
            )
            sum_y = torch.bincount(columns, minlength=width).double()
            for i, (v, m) in enumerate(zip(self.views, moments, strict=True)):
                # products of float32 states are exact in float64: the sums then hardly depend
                # on how the positions are cut into batches (or shared among DDP ranks)
                x = self.standardised(i, features[v].to(device)).double()
                m.count += len(x)
                m.sum_x += x.sum(0)
                m.gram += x.T @ x
                m.cross += torch.sparse.mm(onehot_t, x).T
                m.sum_y += sum_y
        for m in moments:  # each rank summed its share of the pass: add the shares
            for total in (m.sum_x, m.gram, m.cross, m.sum_y):
                all_reduce_sum(total)
            m.count = float(all_reduce_sum(torch.tensor(m.count, **wide)))
        return moments

    def _fit_temperatures(self, val_batches: Iterable) -> None:
        """Per head, the inverse temperature with the least validation cross-entropy: a coarse
        grid shared by all heads, then a fine grid around each head's best; folded into the
        weights so that `logits` gives the calibrated scores."""
        heads = (len(self.views), self.num_offsets)
        coarse = torch.as_tensor(COARSE_INVERSE_TEMPERATURES, dtype=torch.float32)
        grid = coarse.to(self.best_val_xent.device).view(-1, 1, 1).expand(-1, *heads)
        nll = self._grid_nll(val_batches, grid)
        best = grid.gather(0, nll.argmin(0, keepdim=True))[0]
        fine = torch.as_tensor(FINE_STEPS, dtype=torch.float32, device=best.device)
        grid = best.unsqueeze(0) * fine.view(-1, 1, 1)
        nll = self._grid_nll(val_batches, grid)
        low, pick = nll.min(0)
        inverse = grid.gather(0, pick.unsqueeze(0))[0]
        self.best_val_xent.copy_(nats_to_bits(low))
        self.guard.settle(self.best_val_xent)
        self.temperature.copy_(1.0 / inverse)
        for i in range(len(self.views)):
            scale = inverse[i].repeat_interleave(self.num_classes)
            getattr(self, f"weight{i}").mul_(scale)
            getattr(self, f"bias{i}").mul_(scale)

    def _grid_nll(self, batches: Iterable, grid: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (nats) [grid, views, offsets] of softmax(beta * scores) for every
        inverse temperature beta of `grid` [grid, views, offsets], in one pass."""
        device = self.best_val_xent.device
        total, count = torch.zeros(grid.shape, dtype=torch.float64, device=device), 0
        for features, targets, _ in batches:
            targets = targets.to(device)
            count += len(targets)
            scores = self.scores({v: x.to(device) for v, x in features.items()})
            for i, z in enumerate(scores):
                for g, beta in enumerate(grid[:, i]):
                    log_p = self.guard.log_probs(z * beta.view(1, -1, 1)).log_softmax(-1)
                    true = log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [b, offsets]
                    total[g, i] -= true.double().sum(0)
        count = all_reduce_sum(torch.tensor(float(count), dtype=torch.float64, device=device))
        return all_reduce_sum(total) / count

    @torch.no_grad()
    def test(self, batches: Iterable) -> dict[str, torch.Tensor]:
        """The same test statistics as a trained probe's, in one pass."""
        device = self.best_val_xent.device
        scores = self.new_test_scores().to(device)
        for features, targets, rows in batches:
            features = {v: x.to(device) for v, x in features.items()}
            scores.update(*head_statistics(self.logits(features), targets.to(device)), rows)
        self.test_results = {k: v.cpu() for k, v in scores.results().items()}
        return self.test_results


def _inverse(values: torch.Tensor) -> torch.Tensor:
    """1 / values, and 0 where a value is (numerically) zero: the pseudo-inverse, so strength 0
    on rank-deficient states gives the minimum-norm least-squares solution."""
    tiny = values.abs().max() * 1e-12
    return torch.where(values > tiny, 1.0 / values.clamp_min(tiny), 0.0)
