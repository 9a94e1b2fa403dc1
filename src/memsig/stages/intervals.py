"""Bootstrap intervals of a signature over probe-test documents (probes/bootstrap.py,
reliability.py): which test rows belong to which document, and the `intervals` record."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig

from memsig.probes.baselines import class_prior, prior_code_bits
from memsig.probes.bootstrap import check_documents, document_ids
from memsig.probes.factory import Sets
from memsig.probes.loader import PositionBatches, targets_of
from memsig.reliability import bootstrap_intervals
from memsig.signature import Signature


def test_documents(
    cfg: DictConfig, test: PositionBatches, utterances: np.ndarray | None = None
) -> np.ndarray | None:
    """The bootstrap document of every test position (None when intervals are off): its
    utterance where the part has them (`utterances`, indexed by position), else its block of
    probe.bootstrap.block_chars characters."""
    boot = cfg.probe.bootstrap
    if not boot.resamples:
        return None
    if utterances is not None:
        _, documents = np.unique(utterances[test.positions], return_inverse=True)
    else:
        documents = document_ids(test.positions, boot.block_chars)
    check_documents(int(documents.max()) + 1, boot.block_chars, len(test.tokens))
    return documents


def intervals_record(
    cfg: DictConfig,
    signature: Signature,
    sets: Sets,
    documents: np.ndarray,
    results: dict[str, torch.Tensor],
    control: dict[str, torch.Tensor] | None,
) -> dict:
    """signature.json's `intervals`: from the test pass's per-document sums (and the control
    probe's, for selectivity)."""
    fit, _, test = sets
    prior = class_prior(targets_of(fit), len(signature.data["vocab"]))
    boot = cfg.probe.bootstrap
    return {
        **bootstrap_intervals(
            signature,
            results,
            control,
            prior_code_bits(prior, targets_of(test)),
            documents,
            boot.resamples,
            boot.level,
            cfg.seed,
        ),
        "block_chars": boot.block_chars,
    }
