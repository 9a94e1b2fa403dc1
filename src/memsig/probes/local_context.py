"""What the last m characters alone reveal about x_{t-k}: the local-context reference signature.

A state that decodes x_{t-k} may remember it, or may only guess it from characters still in
view. Counting on probe-train how often each window x_{t-m+1..t} co-occurs with each x_{t-k},
and scoring the resulting predictor on probe-test, gives the accuracy and information a
window of m characters supports, offset by offset; a view above it remembers more than that.

The estimate is p(x | window) = (c(window, x) + prior(x)) / (c(window) + 1), with the add-one
smoothed probe-train class prior of the offset (as in the prior baselines), so an unseen
window falls back to the prior; the prediction is its argmax.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from memsig.errors import ConfigError
from memsig.probes.offsets import offset_targets, valid_positions

MAX_ID = 2**62  # window ids must fit int64


def check_orders(orders: object, vocab_size: int) -> list[int]:
    """`probe.reference_orders` as a list of window lengths, or a clear error."""
    if not isinstance(orders, Sequence) or isinstance(orders, str):
        raise ConfigError(
            f"probe.reference_orders={orders!r}: must be a list of window lengths, e.g. [3,5]"
        )
    for m in orders:
        if not isinstance(m, int) or isinstance(m, bool) or m < 1:
            raise ConfigError(
                f"probe.reference_orders contains {m!r}: window lengths must be integers >= 1, "
                "e.g. probe.reference_orders=[3,5]"
            )
        if (vocab_size + 1) ** m >= MAX_ID:
            raise ConfigError(
                f"probe.reference_orders contains {m}: windows that long overflow 64-bit ids "
                f"with {vocab_size} symbols; use shorter windows"
            )
    return list(orders)


def _window_ids(tokens: np.ndarray, positions: np.ndarray, m: int, vocab_size: int) -> np.ndarray:
    """Id of x_{t-m+1..t} for every t; characters before the part's start count as symbol V."""
    padded = np.concatenate([np.full(m - 1, vocab_size), np.asarray(tokens, dtype=np.int64)])
    windows = padded[positions[:, None] + np.arange(m)[None, :]]
    return windows @ ((vocab_size + 1) ** np.arange(m - 1, -1, -1, dtype=np.int64))


def local_context_reference(
    train_tokens: np.ndarray,
    test_tokens: np.ndarray,
    offsets: Sequence[int],
    orders: Sequence[int],
    vocab_size: int,
    prior_entropy_bits: Sequence[float],
) -> dict[str, dict[str, list[float]]]:
    """Per window length m (as a string key): accuracy, xent_bits, info_bits per offset."""
    offs = np.asarray(offsets, dtype=np.int64)
    train_pos = np.asarray(valid_positions(len(train_tokens), offsets))
    test_pos = np.asarray(valid_positions(len(test_tokens), offsets))
    train_y = offset_targets(np.asarray(train_tokens, dtype=np.int64), train_pos, offs)
    test_y = offset_targets(np.asarray(test_tokens, dtype=np.int64), test_pos, offs)
    out = {}
    for m in orders:
        seen, train_row = np.unique(
            _window_ids(train_tokens, train_pos, m, vocab_size), return_inverse=True
        )
        test_ids = _window_ids(test_tokens, test_pos, m, vocab_size)
        slot = np.searchsorted(seen, test_ids).clip(max=len(seen) - 1)
        known = seen[slot] == test_ids
        accuracy, xent = [], []
        for j in range(len(offs)):
            prior = np.bincount(train_y[:, j], minlength=vocab_size) + 1.0
            prior /= prior.sum()
            cells = train_row * vocab_size + train_y[:, j]
            counts = np.bincount(cells, minlength=len(seen) * vocab_size).reshape(len(seen), -1)
            table = (counts + prior) / (counts.sum(1, keepdims=True) + 1.0)
            probs = np.where(known[:, None], table[slot], prior)
            accuracy.append(float(np.mean(probs.argmax(1) == test_y[:, j])))
            xent.append(float(-np.mean(np.log2(probs[np.arange(len(test_y)), test_y[:, j]]))))
        info = [p - x for p, x in zip(prior_entropy_bits, xent, strict=True)]
        out[str(m)] = {"accuracy": accuracy, "xent_bits": xent, "info_bits": info}
    return out
