"""Confidence intervals by a bootstrap over probe-test documents.

Adjacent tokens share state, so token-level resampling would understate the uncertainty; the
resampling unit is a document: for a char corpus, a contiguous block of `block_chars`
characters of the probe-test stream (position t belongs to block t // block_chars). The test
pass keeps per-document sums, so each replicate is one weighted sum: resampling never rescoring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from omegaconf import DictConfig

from memsig.extraction.loader import PositionBatches, targets_of
from memsig.probes.baselines import class_prior, prior_code_bits
from memsig.probes.fit import Sets
from memsig.runtime.errors import ConfigError
from memsig.runtime.units import nats_to_bits
from memsig.signature.record import Signature, capacity, half_life, json_number

if TYPE_CHECKING:  # the context module imports the measures' types
    from memsig.measures.context import MeasureContext


def document_ids(positions: np.ndarray, block_chars: int) -> np.ndarray:
    """The document (0, 1, ...) of every position: its block of `block_chars` characters."""
    blocks = np.asarray(positions) // block_chars
    return np.unique(blocks, return_inverse=True)[1].reshape(-1)


def check_documents(count: int, block_chars: int, part_tokens: int) -> None:
    """A bootstrap needs at least two documents to resample."""
    if count < 2:
        raise ConfigError(
            f"probe.bootstrap.block_chars={block_chars} leaves {count} document(s) in the "
            f"probe_test part ({part_tokens} tokens): a bootstrap needs at least 2; lower "
            "probe.bootstrap.block_chars, enlarge data.split.probe_test, or turn intervals "
            "off (probe.bootstrap.resamples=0)"
        )


def resample_weights(documents: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, documents]: how often each document is drawn in each replicate."""
    rng = np.random.default_rng([seed, documents])
    return rng.multinomial(documents, np.full(documents, 1.0 / documents), size=resamples)


def percentile_interval(replicates: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided percentile interval over the first axis (replicates)."""
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(replicates, [tail, 1.0 - tail], axis=0)
    return lo, hi


def resampled_means(weights: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per replicate, sum(weights * sums) / sum(weights * counts): a mean over tokens of the
    resampled documents. sums: [documents, ...]; counts: [documents]."""
    flat = sums.reshape(len(sums), -1)
    means = (weights @ flat) / (weights @ counts)[:, None]
    return means.reshape(len(weights), *sums.shape[1:])


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


def bootstrap_intervals(
    signature: Signature,
    results: dict[str, torch.Tensor],
    control: dict[str, torch.Tensor] | None,
    prior_bits: np.ndarray,
    documents: np.ndarray,
    resamples: int,
    level: float,
    seed: int,
) -> dict:
    """Percentile intervals over documents for accuracy, information (and selectivity) per
    view x offset and for capacity and half-life. `results` and `control` carry the test
    pass's per-document sums; `prior_bits` [positions, offsets] is what the prior spends on
    each test target, `documents` the document of each test position."""
    offsets = signature.offsets
    count = results["doc_count"].numpy()
    prior_doc = np.zeros((len(count), len(offsets)))
    np.add.at(prior_doc, documents, prior_bits)
    weights = resample_weights(len(count), resamples, seed)
    prior = resampled_means(weights, prior_doc, count)[:, None, :]  # [B, 1, K]
    accuracy = resampled_means(weights, results["doc_correct"].numpy(), count)  # [B, V, K]
    info = prior - nats_to_bits(resampled_means(weights, results["doc_nll"].numpy(), count))
    per_offset = {"accuracy": accuracy, "info_bits": info}
    if control is not None:
        per_offset["selectivity"] = accuracy - resampled_means(
            weights, control["doc_correct"].numpy(), count
        )
    per_view = {"capacity": capacity(offsets, info, prior)}
    lives = half_life(offsets, info)
    if lives is not None:
        per_view["half_life"] = lives
    bounds = {name: percentile_interval(values, level) for name, values in per_offset.items()}
    pairs = {name: percentile_interval(values, level) for name, values in per_view.items()}
    views = {}
    for i, view in enumerate(signature.views):
        entry = {}
        for name, (lo, hi) in bounds.items():
            entry[f"{name}_lo"], entry[f"{name}_hi"] = lo[i].tolist(), hi[i].tolist()
        for name, (lo, hi) in pairs.items():
            entry[name] = [json_number(lo[i]), json_number(hi[i])]
        views[view] = entry
    return {
        "level": level,
        "resamples": resamples,
        "documents": len(count),
        "views": views,
    }


def measure(context: MeasureContext) -> dict:
    """`intervals` (probe.bootstrap.resamples > 0): bootstrap intervals over the test
    documents, selectivity's too when the control task ran before."""
    if context.documents is None:
        return {}
    record = intervals_record(
        context.cfg,
        context.signature,
        context.sets,
        context.documents,
        context.fitted.results,
        context.shared.get("control"),
    )
    return {"intervals": record}
