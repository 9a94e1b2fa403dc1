"""Control tasks (Hewitt & Liang, 2019) for memory probes.

For every offset, each input symbol type gets a random control label drawn from the
empirical distribution of that offset's real targets (probe-train), fixed by the seed. The
control task relabels the same index shifts (target labels[k, x_{t-k}]), so a probe that
only memorises a symbol -> label table scores as well on it as on the real task; selectivity
(accuracy - control accuracy) is what the real task gains over that. Both tasks are at their
chance level on features that hold nothing; those levels differ (a random grouping of symbols
has a larger majority class), so read selectivity next to `control.baseline`.

The control task of a signature (`probe.control=true`) trains the configured probe kind on
these labels; its record gives the control accuracy and selectivity per view x offset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from memsig.extraction.loader import PositionBatches, targets_of
from memsig.probes.baselines import class_prior, prior_baselines
from memsig.probes.fit import FittedProbe, ProbeSetup, Sets, fit_and_test
from memsig.signature.record import Signature

if TYPE_CHECKING:  # the context module imports the measures' types
    from memsig.measures.context import MeasureContext


def control_labels(train_targets: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """[offsets, symbols]: the control label of every symbol type, per offset."""
    prior = class_prior(train_targets, num_classes)
    rng = np.random.default_rng([seed, num_classes, train_targets.shape[1]])
    return np.stack([rng.choice(num_classes, size=num_classes, p=p) for p in prior])


def relabelled(dataset: PositionBatches, labels: np.ndarray) -> PositionBatches:
    """The same positions and states, with control targets."""
    return dataset.replaced(labels=labels)


def control_task(
    setup: ProbeSetup, sets: Sets, key: list, documents: np.ndarray | None, signature: Signature
) -> tuple[dict, FittedProbe]:
    """signature.json's `control` record, and the control probe (its per-document sums feed
    the selectivity intervals)."""
    labels = control_labels(targets_of(sets[0]), setup.num_classes, setup.cfg.seed)
    control_sets = tuple(relabelled(part, labels) for part in sets)
    control = fit_and_test(setup, control_sets, [*key, "control"], documents=documents)
    majority = prior_baselines(
        targets_of(control_sets[0]), targets_of(control_sets[2]), setup.num_classes
    )
    record = control_record(
        signature, labels, control.results, np.asarray(majority["majority_accuracy"])
    )
    return record, control


def control_record(
    signature: Signature,
    labels: np.ndarray,
    control: dict[str, torch.Tensor],
    control_majority: np.ndarray,
) -> dict:
    """Control accuracy and selectivity (accuracy - control accuracy) per view x offset, and
    selectivity above chance: each accuracy less its majority baseline first, so features that
    hold nothing score zero whatever the two tasks' chance levels."""
    chance_gap = np.asarray(signature.baseline["majority_accuracy"]) - control_majority
    views = {}
    for i, (view, scores) in enumerate(signature.views.items()):
        accuracy = control["accuracy"][i].numpy()
        selectivity = np.asarray(scores.accuracy) - accuracy
        views[view] = {
            "accuracy": accuracy.tolist(),
            "selectivity": selectivity.tolist(),
            "selectivity_above_chance": (selectivity - chance_gap).tolist(),
        }
    return {
        "labels": labels.tolist(),
        "baseline": {"majority_accuracy": control_majority.tolist()},
        "views": views,
    }


def measure(context: MeasureContext) -> dict:
    """`control` (probe.control): the control task's record; its probe's per-document sums
    are left for the selectivity intervals."""
    if not context.cfg.probe.control:
        return {}
    record, probe = control_task(
        context.setup, context.sets, context.key, context.documents, context.signature
    )
    context.shared["control"] = probe.results
    return {"control": record}
