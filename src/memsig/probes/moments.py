"""The moments probes whiten (or standardise) with: mean and covariance of every head's input
over the fit positions only.

The state cache's own moments cover every row of the part: rows whose targets do not exist
(the stream's first positions, where an n-gram window is still padding; speech frames without
a grapheme), and the validation block. A few such rows give a direction of tiny but non-zero
variance (an n-gram window slot that is empty only in the padding rows), which whitening then
amplifies: a test row that differs there (a symbol unseen in the fit block) lands far out.
Taken over the fit positions, those directions have exactly no variance and are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from memsig.extraction.loader import PositionBatches, position_loader


class RunningMoments:
    """Mean and covariance (float64) of rows arriving block by block, per view.

    Each block's moments are taken around the block's own mean (a float32 matmul, which
    centring keeps accurate) and merged into the running ones in float64 (Chan et al.'s
    pairwise update): several times cheaper than float64 products of raw values."""

    def __init__(self, view_dims: Mapping[str, int]) -> None:
        self.count = 0  # rows added so far (every view gets the same rows)
        self.mean = {v: np.zeros(d) for v, d in view_dims.items()}
        # sums of outer products of rows centred on the running mean
        self.scatter = {v: np.zeros((d, d)) for v, d in view_dims.items()}

    def add(self, views: Mapping[str, torch.Tensor]) -> None:
        """Add one block of rows (the same number for every view)."""
        n_new = len(next(iter(views.values())))
        if n_new == 0:
            return
        n_old = self.count
        total = n_old + n_new
        for v, rows in views.items():
            values = rows.float()
            chunk_mean = values.mean(0)
            centred = values - chunk_mean
            delta = chunk_mean.double().cpu().numpy() - self.mean[v]
            self.mean[v] += delta * (n_new / total)
            self.scatter[v] += (centred.T @ centred).double().cpu().numpy()
            self.scatter[v] += np.outer(delta, delta) * (n_old * n_new / total)
        self.count = total

    def result(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Per view: the mean and the (biased) covariance of every row added."""
        cov = {v: s / max(self.count, 1) for v, s in self.scatter.items()}
        return {v: m.copy() for v, m in self.mean.items()}, cov


def fit_moments(
    fit: PositionBatches, view_dims: Mapping[str, int], batch_size: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per head input (cached views and any derived ones the batches build): mean and
    covariance over the fit positions, from one pass every DDP rank makes over all of them."""
    moments = RunningMoments(view_dims)
    for features, _, _ in position_loader(fit, batch_size, shuffle=False, shard=False):
        moments.add({v: features[v] for v in view_dims})
    return moments.result()
