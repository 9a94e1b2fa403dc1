"""Sources whose memory demand is known exactly: the answer key of a signature.

``data=repeat`` (lag n, repeat probability p, V symbols): x_t = x_{t-n} with probability p,
otherwise a uniform random symbol; the first n symbols are uniform.

* Memory it demands: p(x_{t+1} | past) depends on x_{t+1-n} and nothing else, so an optimal
  predictor holds exactly the last n inputs (offsets 0..n-1).
* What is inferable from the present: the stream is n independent interleaved chains (one per
  residue of t mod n), each a symmetric channel x_{t-n} -> x_t that keeps its symbol with
  probability p. Given the last m inputs, x_{t-k} is independent of them when m <= k <= n-1
  (no input of its chain is in view), and for k >= m it is linked only through the nearest
  later input of its chain in view, h = ceil((k - m + 1) / n) hops away, which carries
  :func:`repeat_info_bits` (p**h) bits. So beyond the view, a state holding offsets 0..n-1
  adds exactly :func:`repeat_conditional_bits` of memory: log2 V at m <= k <= n-1, fading
  geometrically (in p**hops) beyond.

``data=copy`` (delay d, V symbols): uniform random inputs, and the base model is trained on
the delayed input x_{t-d} instead of the next symbol (``Corpus.target = d``).

* Memory it demands: at step t the model must emit x_{t-d} now and x_{t-d+1} .. x_t later,
  so its state holds exactly d+1 inputs (offsets 0..d).
* What is inferable from the present: nothing; inputs are independent, so no past input can
  be guessed from later ones, and any information beyond offset d is memory the task does not
  need.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from memsig.data.corpus import Corpus, split_blocks
from memsig.data.markov import SYMBOLS
from memsig.runtime.errors import ConfigError


def _check(vocab_size: int, num_chars: int, memory: int) -> None:
    """What config/validate.py cannot see from the config alone (sizes relative to each other)."""
    if not 2 <= vocab_size <= len(SYMBOLS):
        raise ConfigError(
            f"data.vocab_size={vocab_size}: must be between 2 and {len(SYMBOLS)} "
            "(symbols are a-z then 0-9; e.g. data.vocab_size=8)"
        )
    if num_chars <= memory:
        raise ConfigError(
            f"data.num_chars={num_chars}: must be larger than the source's memory ({memory}); "
            "e.g. data.num_chars=100000"
        )


def repeat_stream(
    lag: int, p: float, vocab_size: int, num_chars: int, rng: np.random.Generator
) -> np.ndarray:
    """num_chars symbols of the repeat source, built chain by chain without a per-step loop:
    in each chain a symbol is kept from the last fresh draw, so x_t is the fresh draw at the
    latest step s <= t of its chain where a fresh draw happened."""
    fresh = rng.integers(vocab_size, size=num_chars)
    is_fresh = rng.random(num_chars) >= p
    is_fresh[:lag] = True
    out = np.empty(num_chars, dtype=np.int64)
    for residue in range(lag):
        chain_fresh, chain_values = is_fresh[residue::lag], fresh[residue::lag]
        last_fresh = np.maximum.accumulate(np.where(chain_fresh, np.arange(len(chain_fresh)), 0))
        out[residue::lag] = chain_values[last_fresh]
    return out


def repeat_corpus(
    lag: int,
    p: float,
    vocab_size: int,
    num_chars: int,
    seed: int,
    split: Mapping[str, float],
    name: str = "repeat",
) -> Corpus:
    """Sample the repeat source (see the module docstring) and split it into blocks."""
    _check(vocab_size, num_chars, lag)
    stream = repeat_stream(lag, p, vocab_size, num_chars, np.random.default_rng(seed))
    parts = split_blocks(stream, split, source=f"data.num_chars={num_chars}")
    info = {
        "lag": float(lag),
        "p": float(p),
        "entropy_rate_bits": math.log2(vocab_size) - repeat_info_bits(p, vocab_size),
    }
    return Corpus(name, "char", tuple(SYMBOLS[:vocab_size]), parts, info)


def copy_corpus(
    delay: int,
    vocab_size: int,
    num_chars: int,
    seed: int,
    split: Mapping[str, float],
    name: str = "copy",
) -> Corpus:
    """Uniform random inputs labelled with the input `delay` steps back (Corpus.target)."""
    _check(vocab_size, num_chars, delay)
    stream = np.random.default_rng(seed).integers(vocab_size, size=num_chars)
    parts = split_blocks(stream, split, source=f"data.num_chars={num_chars}")
    info = {"delay": float(delay), "entropy_rate_bits": math.log2(vocab_size)}
    return Corpus(name, "char", tuple(SYMBOLS[:vocab_size]), parts, info, target=delay)


def repeat_info_bits(keep: float, vocab_size: int) -> float:
    """I(x; y) in bits when y keeps x (uniform over V symbols) with probability `keep`,
    otherwise is uniform: log2 V minus the entropy of the channel's output given x."""
    same = keep + (1 - keep) / vocab_size
    other = (1 - keep) / vocab_size
    entropy = -same * math.log2(same) - (
        (vocab_size - 1) * other * math.log2(other) if other > 0 else 0.0
    )
    return math.log2(vocab_size) - entropy


def repeat_hops(k: int, seen: int, lag: int) -> int | None:
    """Chain steps from x_{t-k} to the nearest later input among the last `seen` ones
    (0 when x_{t-k} is itself in view, None when none of its chain is)."""
    if k < seen:
        return 0
    hops = math.ceil((k - seen + 1) / lag)
    return hops if k - hops * lag >= 0 and seen > 0 else None


def repeat_conditional_bits(k: int, seen: int, lag: int, p: float, vocab_size: int) -> float:
    """Memory beyond the last `seen` inputs at offset k of a state holding exactly the last
    `lag` inputs (what an optimal predictor holds): I(x_{t-k}; state | last `seen` inputs)."""

    def info(window: int) -> float:
        hops = repeat_hops(k, window, lag)
        if hops is None:
            return 0.0
        return math.log2(vocab_size) if hops == 0 else repeat_info_bits(p**hops, vocab_size)

    return info(max(seen, lag)) - info(seen)
