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

from memsig.extraction.loader import PositionBatches, position_loader
from memsig.extraction.state_cache import RunningMoments


def fit_moments(
    fit: PositionBatches, view_dims: Mapping[str, int], batch_size: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per head input (cached views and any derived ones the batches build): mean and
    covariance over the fit positions, from one pass every DDP rank makes over all of them."""
    moments = RunningMoments(view_dims)
    for features, _, _ in position_loader(fit, batch_size, shuffle=False, shard=False):
        moments.add({v: features[v] for v in view_dims})
    return moments.result()
