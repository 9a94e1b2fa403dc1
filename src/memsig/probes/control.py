"""Control tasks (Hewitt & Liang, 2019) for memory probes.

For every offset, each input symbol type gets a random control label drawn from the
empirical distribution of that offset's real targets (probe-train), fixed by the seed. The
control task relabels the same index shifts (target labels[k, x_{t-k}]), so a probe that
only memorises a symbol -> label table scores as well on it as on the real task; selectivity
(accuracy - control accuracy) is what the real task gains over that. Both tasks are at their
chance level on features that hold nothing; those levels differ (a random grouping of symbols
has a larger majority class), so read selectivity next to `control.baseline`.
"""

from __future__ import annotations

import numpy as np

from memsig.probes.baselines import class_prior
from memsig.probes.loader import PositionBatches


def control_labels(train_targets: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """[offsets, symbols]: the control label of every symbol type, per offset."""
    prior = class_prior(train_targets, num_classes)
    rng = np.random.default_rng([seed, num_classes, train_targets.shape[1]])
    return np.stack([rng.choice(num_classes, size=num_classes, p=p) for p in prior])


def relabelled(dataset: PositionBatches, labels: np.ndarray) -> PositionBatches:
    """The same positions and states, with control targets."""
    return dataset.replaced(labels=labels)
