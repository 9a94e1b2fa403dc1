"""An order-n Markov character source: the default calibration corpus.

Two facts make it a calibration source:

* Its entropy rate is known exactly (``info["entropy_rate_bits"]``), so a model's loss can be
  compared with the best achievable one.
* A model that predicts optimally must hold the last n characters. Every context (the last n
  characters) gets its own random set of ``branching`` allowed next symbols with random
  probabilities, so contexts that differ only in their oldest character have different
  next-symbol distributions and the state must tell all of them apart: a linear probe on the
  state should recover offsets 0..n-1.

With ``branching < vocab_size`` older characters are partly inferable from more recent ones
(only some symbols could have led to what followed), so offsets beyond n are decodable above
chance too, but less well.

Symbols are the first ``vocab_size`` of ``SYMBOLS``. A context is the integer whose base-V
digits are its characters, oldest most significant; it updates as ``(ctx * V + x) % V**n``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from memsig.data.corpus import Corpus, split_blocks
from memsig.runtime.errors import ConfigError

SYMBOLS = "abcdefghijklmnopqrstuvwxyz0123456789"
MAX_CONTEXTS = 2**22


@dataclass(frozen=True)
class MarkovTable:
    """Next-symbol distributions: row c lists context c's allowed symbols and their odds."""

    order: int
    vocab_size: int
    allowed: np.ndarray  # (vocab_size**order, branching) int64 allowed next symbols
    probs: np.ndarray  # (vocab_size**order, branching) float64, rows sum to 1


def markov_table(
    order: int, vocab_size: int, branching: int, rng: np.random.Generator
) -> MarkovTable:
    """Draw a random table: per context, a uniform random set of `branching` symbols
    (without replacement) with Dirichlet(1, ..., 1) probabilities (normalised exponentials).

    markov_corpus draws its table first from default_rng(seed), so calling this with
    default_rng(seed) reproduces a corpus's table.
    """
    num_contexts = vocab_size**order
    allowed = rng.random((num_contexts, vocab_size)).argsort(axis=1)[:, :branching]
    weights = rng.standard_exponential((num_contexts, branching))
    return MarkovTable(order, vocab_size, allowed, weights / weights.sum(axis=1, keepdims=True))


def context_ids(stream: np.ndarray, order: int, vocab_size: int) -> np.ndarray:
    """Context index of every position t >= order of stream (the characters t-order .. t-1)."""
    windows = np.lib.stride_tricks.sliding_window_view(stream[:-1], order)
    return windows @ (vocab_size ** np.arange(order - 1, -1, -1, dtype=np.int64))


def transition_probs(table: MarkovTable, stream: np.ndarray) -> np.ndarray:
    """p(x_t | context) under the table for every t >= order; 0 where the table forbids x_t."""
    ctx = context_ids(stream, table.order, table.vocab_size)
    match = table.allowed[ctx] == stream[table.order :, None]
    return (table.probs[ctx] * match).sum(axis=1)


def context_entropy_bits(table: MarkovTable) -> np.ndarray:
    """H(next symbol | context) of every context, in bits."""
    p = table.probs
    return (p * np.log2(1 / np.where(p > 0, p, 1.0))).sum(axis=1)


def entropy_rate_bits(table: MarkovTable, tol: float = 1e-12, max_iter: int = 100_000) -> float:
    """Exact entropy rate: sum over contexts of pi(c) * H(next | c).

    pi is the limit of the context distribution started uniformly (as sampling is), found by
    power iteration of the lazy chain (I + P) / 2: it has the same limit as the Cesaro average
    of P's iterates but converges for periodic chains too. Iteration stops once the entropy
    rate can change by less than tol.
    """
    h = context_entropy_bits(table)
    num_contexts = len(h)
    successors = (
        (np.arange(num_contexts)[:, None] * table.vocab_size + table.allowed) % num_contexts
    ).ravel()
    pi = np.full(num_contexts, 1.0 / num_contexts)
    for _ in range(max_iter):
        flow = np.bincount(
            successors, weights=(pi[:, None] * table.probs).ravel(), minlength=num_contexts
        )
        new = 0.5 * (pi + flow)
        converged = np.abs(new - pi).sum() * h.max() <= tol
        pi = new
        if converged:
            return float(pi @ h)
    raise ConfigError(
        f"data.order={table.order}, data.vocab_size={table.vocab_size}: the entropy rate did not "
        f"converge in {max_iter} iterations; use a smaller data.order or data.vocab_size"
    )


def sample(table: MarkovTable, num_chars: int, rng: np.random.Generator) -> np.ndarray:
    """num_chars symbols: a uniformly random first context, then draws from the table."""
    order, vocab_size = table.order, table.vocab_size
    num_contexts, branching = table.allowed.shape
    start = rng.integers(vocab_size, size=order)
    ctx = int(context_ids(np.append(start, 0), order, vocab_size)[0])
    cumulative = np.cumsum(table.probs, axis=1)
    cumulative[:, -1] = 2.0  # every uniform in [0, 1) lands in its row despite rounding
    # memoryviews index to plain Python numbers, which keeps the sequential loop fast
    cum = memoryview(cumulative.ravel())
    allowed = memoryview(np.ascontiguousarray(table.allowed, dtype=np.int64).ravel())
    out = start.tolist()
    for u in rng.random(num_chars - order).tolist():
        row = ctx * branching
        x = allowed[bisect_right(cum, u, row, row + branching)]
        out.append(x)
        ctx = (ctx * vocab_size + x) % num_contexts
    return np.array(out, dtype=np.int64)


def _validate(order: int, vocab_size: int, branching: int, num_chars: int) -> None:
    given = {
        "order": order,
        "vocab_size": vocab_size,
        "branching": branching,
        "num_chars": num_chars,
    }
    for key, value in given.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"data.{key}={value!r}: must be an integer (e.g. data.order=3)")
    if order < 1:
        raise ConfigError(f"data.order={order}: must be >= 1 (e.g. data.order=3)")
    if not 2 <= vocab_size <= len(SYMBOLS):
        raise ConfigError(
            f"data.vocab_size={vocab_size}: must be between 2 and {len(SYMBOLS)} "
            "(symbols are a-z then 0-9; e.g. data.vocab_size=8)"
        )
    if not 1 <= branching <= vocab_size:
        raise ConfigError(
            f"data.branching={branching}: must be between 1 and data.vocab_size={vocab_size} "
            "(e.g. data.branching=3)"
        )
    if vocab_size**order > MAX_CONTEXTS:
        raise ConfigError(
            f"data.order={order} with data.vocab_size={vocab_size} gives {vocab_size}**{order} "
            f"contexts, more than 2**22 fit in memory; lower data.order or data.vocab_size"
        )
    if num_chars <= order:
        raise ConfigError(
            f"data.num_chars={num_chars}: must be larger than data.order={order} "
            "(e.g. data.num_chars=300000)"
        )


def markov_corpus(
    order: int,
    vocab_size: int,
    branching: int,
    num_chars: int,
    seed: int,
    split: Mapping[str, float],
    name: str = "markov",
) -> Corpus:
    """Sample num_chars characters of a random order-n Markov source and split them."""
    _validate(order, vocab_size, branching, num_chars)
    rng = np.random.default_rng(seed)
    table = markov_table(order, vocab_size, branching, rng)
    stream = sample(table, num_chars, rng)
    parts = split_blocks(stream, split, source=f"data.num_chars={num_chars}")
    info = {
        "entropy_rate_bits": entropy_rate_bits(table),
        "empirical_conditional_entropy_bits": float(
            np.log2(1 / transition_probs(table, stream)).mean()
        ),
        "order": float(order),
        "branching": float(branching),
    }
    return Corpus(name, "char", tuple(SYMBOLS[:vocab_size]), parts, info)
