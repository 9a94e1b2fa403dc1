"""What the last m characters alone reveal about x_{t-k}: the local-context reference signature.

A state that decodes x_{t-k} may remember it, or may only guess it from characters still in
view. A predictor of x_{t-k} from the window x_{t-m+1..t}, fitted on the probes' fit block,
tuned on their validation block and scored on probe-test, gives the accuracy and information
a window of m characters supports, offset by offset; a view above it remembers more than that.

The predictor is a proper estimator, so that a window that says nothing about x_{t-k} scores
the prior (zero information), never below it beyond noise: add-alpha smoothing towards the
next shorter window,

    p_j(x | w) = (c(w, x) + alpha_j p_{j-1}(x | w')) / (c(w) + alpha_j),   j = 1..m,

with c the fit-block counts, w' the window w without its oldest character, p_0 the add-one
smoothed class prior of the offset (the prior of the baselines) and alpha_j chosen per window
length and offset on the validation block from ALPHAS (infinity: the window adds nothing). A
fixed discount cannot do this: counts of long windows are sparse, and a window seen a few times
claims its targets with confidence that far offsets do not earn. Accuracy is p_m's most
probable symbol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from memsig.extraction.offsets import input_windows, offset_targets
from memsig.models.ngram import MAX_ID
from memsig.probes.baselines import class_prior
from memsig.runtime.errors import ConfigError

if TYPE_CHECKING:  # the context module imports the measures' types
    from memsig.measures.context import MeasureContext

# smoothing strengths tried on the validation block, besides infinity (the shorter window alone)
ALPHAS = 2.0 ** np.arange(-8, 15, 2)


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


def smoothed(counts: np.ndarray, lower: np.ndarray, alpha: float) -> np.ndarray:
    """p_j from the counts c(w, .) [n, V] of each position's window and p_{j-1} [n, V]."""
    if np.isinf(alpha):
        return lower
    return (counts + alpha * lower) / (counts.sum(1, keepdims=True) + alpha)


def tune_alpha(counts: np.ndarray, lower: np.ndarray, targets: np.ndarray) -> float:
    """The alpha (of infinity and ALPHAS) with the lowest validation cross-entropy; the
    smoother one on ties."""
    rows = np.arange(len(targets))
    hits, lower_hits = counts[rows, targets][:, None], lower[rows, targets][:, None]
    alphas = ALPHAS[::-1]
    p = (hits + alphas * lower_hits) / (counts.sum(1)[:, None] + alphas)
    xent = np.concatenate([-np.log2(lower_hits).mean(0), -np.log2(p).mean(0)])
    return float(np.concatenate([[np.inf], alphas])[np.argmin(xent)])


def local_context_reference(
    train_tokens: np.ndarray,
    test_tokens: np.ndarray,
    positions: tuple[np.ndarray, np.ndarray, np.ndarray],
    offsets: Sequence[int],
    orders: Sequence[int],
    vocab_size: int,
    prior_entropy_bits: Sequence[float],
) -> dict[str, dict[str, list[float]]]:
    """Per window length m (as a string key): accuracy, xent_bits, info_bits per offset.

    `positions` are the probes' fit and validation positions (in `train_tokens`) and test
    positions (in `test_tokens`)."""
    offs = np.asarray(offsets, dtype=np.int64)
    streams = [np.asarray(t, dtype=np.int64) for t in (train_tokens, train_tokens, test_tokens)]
    fit_y, val_y, test_y = (
        offset_targets(s, p, offs) for s, p in zip(streams, positions, strict=True)
    )
    levels = []  # per window length: each fit position's window row, each val/test one's counts
    for length in range(1, max(orders, default=0) + 1):
        ids = [
            _window_ids(s, p, length, vocab_size) for s, p in zip(streams, positions, strict=True)
        ]
        seen, row = np.unique(ids[0], return_inverse=True)
        slots = [np.searchsorted(seen, i).clip(max=len(seen) - 1) for i in ids[1:]]
        known = [(seen[s] == i)[:, None] for s, i in zip(slots, ids[1:], strict=True)]
        levels.append((len(seen), row, slots, known))
    prior = class_prior(fit_y, vocab_size)
    scores = {m: ([], []) for m in orders}
    for j in range(len(offs)):
        val_p = np.broadcast_to(prior[j], (len(val_y), vocab_size))
        test_p = np.broadcast_to(prior[j], (len(test_y), vocab_size))
        for length, (num_seen, row, (val_slot, test_slot), (val_known, test_known)) in enumerate(
            levels, start=1
        ):
            table = np.bincount(row * vocab_size + fit_y[:, j], minlength=num_seen * vocab_size)
            table = table.reshape(num_seen, vocab_size)
            val_c, test_c = table[val_slot] * val_known, table[test_slot] * test_known
            alpha = tune_alpha(val_c, val_p, val_y[:, j])
            val_p, test_p = smoothed(val_c, val_p, alpha), smoothed(test_c, test_p, alpha)
            if length in scores:
                hit = test_p[np.arange(len(test_y)), test_y[:, j]]
                scores[length][0].append(float(np.mean(test_p.argmax(1) == test_y[:, j])))
                scores[length][1].append(float(-np.mean(np.log2(hit))))
    out = {}
    for m in orders:
        accuracy, xent = scores[m]
        info = [p - x for p, x in zip(prior_entropy_bits, xent, strict=True)]
        out[str(m)] = {"accuracy": accuracy, "xent_bits": xent, "info_bits": info}
    return out


def measure(context: MeasureContext) -> dict:
    """`local_context` (probe.reference_orders): the smoothed n-gram reference per window."""
    orders = list(context.cfg.probe.reference_orders)
    if not orders:
        return {}
    fit, val, test = context.sets
    parts, signature = context.corpus.parts, context.signature
    record = local_context_reference(
        parts["probe_train"],
        parts["probe_test"],
        (fit.positions, val.positions, test.positions),
        signature.offsets,
        orders,
        len(context.corpus.vocab),
        signature.baseline["prior_entropy_bits"],
    )
    return {"local_context": record}
