"""Confidence intervals by a bootstrap over probe-test documents.

Adjacent tokens share state, so token-level resampling would understate the uncertainty; the
resampling unit is a document: for a char corpus, a contiguous block of `block_chars`
characters of the probe-test stream (position t belongs to block t // block_chars). The test
pass keeps per-document sums, so each replicate is one weighted sum: resampling never rescoring.
"""

from __future__ import annotations

import numpy as np

from memsig.errors import ConfigError


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
