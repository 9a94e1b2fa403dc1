"""What the last m characters alone reveal about x_{t-k}: the local-context reference signature.

A state that decodes x_{t-k} may remember it, or may only guess it from characters still in
view. Counting on probe-train how often each window x_{t-m+1..t} co-occurs with each x_{t-k},
and scoring the resulting predictor on probe-test, gives the accuracy and information a
window of m characters supports, offset by offset; a view above it remembers more than that.

Both scores use the last j = 1..m characters w, counted on probe-train, and a test window
unseen there uses its longest seen suffix (w' drops w's oldest character):

* accuracy: the most frequent x_{t-k} after w (ties broken by the shorter windows), so x_{t-k}
  with k < m is recovered whenever the last k+1 characters were seen;
* information: absolute-discount interpolation, p_j(x | w) = (c(w, x) - D)^+ / c(w) +
  D N1+(w .) / c(w) p_{j-1}(x | w') with Kneser-Ney's D per window length and p_0 the add-one
  smoothed class prior of the offset (as in the prior baselines): a window seen once must not
  claim its one target with certainty.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from memsig.errors import ConfigError
from memsig.models.ngram import MAX_ID, kn_discount
from memsig.probes.offsets import input_windows, offset_targets, valid_positions


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
    windows = input_windows(tokens, positions, m, pad=vocab_size)
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
    levels = []  # per window length: seen train windows, each train/test position's slot
    for length in range(1, max(orders, default=0) + 1):
        train_ids = _window_ids(train_tokens, train_pos, length, vocab_size)
        seen, row = np.unique(train_ids, return_inverse=True)
        test_ids = _window_ids(test_tokens, test_pos, length, vocab_size)
        slot = np.searchsorted(seen, test_ids).clip(max=len(seen) - 1)
        levels.append((seen, row, slot, (seen[slot] == test_ids)[:, None]))
    out = {}
    for m in orders:
        accuracy, xent = [], []
        for j in range(len(offs)):
            prior = np.bincount(train_y[:, j], minlength=vocab_size) + 1.0
            prior /= prior.sum()
            seen_lower, rows = np.zeros(1, dtype=np.int64), prior[None, :]
            probs = scores = np.broadcast_to(prior, (len(test_y), vocab_size))
            for length, (seen, row, slot, known) in enumerate(levels[:m], start=1):
                cells = row * vocab_size + train_y[:, j]
                counts = np.bincount(cells, minlength=len(seen) * vocab_size)
                counts = counts.reshape(len(seen), vocab_size)
                lower = rows[np.searchsorted(seen_lower, seen % (vocab_size + 1) ** (length - 1))]
                total = counts.sum(1, keepdims=True)
                d = kn_discount(counts[counts > 0])
                distinct = (counts > 0).sum(1, keepdims=True)
                rows = np.maximum(counts - d, 0) / total + d * distinct / total * lower
                probs = np.where(known, rows[slot], probs)
                scores = np.where(known, (counts + lower)[slot], scores)
                seen_lower = seen
            accuracy.append(float(np.mean(scores.argmax(1) == test_y[:, j])))
            xent.append(float(-np.mean(np.log2(probs[np.arange(len(test_y)), test_y[:, j]]))))
        info = [p - x for p, x in zip(prior_entropy_bits, xent, strict=True)]
        out[str(m)] = {"accuracy": accuracy, "xent_bits": xent, "info_bits": info}
    return out
