"""What a probe scores without looking at the state: the class prior of probe-train targets."""

from __future__ import annotations

import numpy as np


def class_prior(train_targets: np.ndarray, num_classes: int) -> np.ndarray:
    """[offsets, classes]: add-one smoothed class frequency of probe-train targets."""
    counts = np.stack(
        [np.bincount(column, minlength=num_classes) + 1.0 for column in train_targets.T]
    )
    return counts / counts.sum(1, keepdims=True)


def prior_code_bits(prior: np.ndarray, test_targets: np.ndarray) -> np.ndarray:
    """[positions, offsets]: bits the prior spends on each test target."""
    return -np.log2(np.take_along_axis(prior.T, test_targets, axis=0))


def prior_baselines(
    train_targets: np.ndarray, test_targets: np.ndarray, num_classes: int
) -> dict[str, list[float]]:
    """Per offset (columns): majority-class accuracy and prior cross-entropy on probe-test.

    The prior is the add-one smoothed class frequency of probe-train targets, so a probe that
    learns nothing from the state scores about `prior_entropy_bits` and zero information.
    """
    prior = class_prior(train_targets, num_classes)
    majority = (test_targets == prior.argmax(1)[None, :]).mean(0)
    entropy = prior_code_bits(prior, test_targets).mean(0)
    return {"majority_accuracy": majority.tolist(), "prior_entropy_bits": entropy.tolist()}
