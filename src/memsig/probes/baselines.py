"""What a probe scores without looking at the state: the class prior of probe-train targets."""

from __future__ import annotations

import numpy as np


def prior_baselines(
    train_targets: np.ndarray, test_targets: np.ndarray, num_classes: int
) -> dict[str, list[float]]:
    """Per offset (columns): majority-class accuracy and prior cross-entropy on probe-test.

    The prior is the add-one smoothed class frequency of probe-train targets, so a probe that
    learns nothing from the state scores about `prior_entropy_bits` and zero information.
    """
    majority, entropy = [], []
    for column in range(train_targets.shape[1]):
        counts = np.bincount(train_targets[:, column], minlength=num_classes) + 1.0
        prior = counts / counts.sum()
        test = test_targets[:, column]
        majority.append(float(np.mean(test == np.argmax(counts))))
        entropy.append(float(-np.mean(np.log2(prior[test]))))
    return {"majority_accuracy": majority, "prior_entropy_bits": entropy}
