"""The control task of a signature (`probe.control=true`): the same probe kind trained on
relabelled targets (probes/control.py), and its selectivity record."""

from __future__ import annotations

import numpy as np

from memsig.probes.baselines import prior_baselines
from memsig.probes.control import control_labels, relabelled
from memsig.probes.factory import FittedProbe, ProbeSetup, Sets, fit_and_test
from memsig.probes.loader import targets_of
from memsig.reliability import control_record
from memsig.signature import Signature


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
