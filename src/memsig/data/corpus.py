"""The tokenised corpus every experiment reads, and how its stream is cut into parts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from memsig.runtime.errors import ConfigError

PARTS = ("train", "val", "probe_train", "probe_test")


@dataclass(frozen=True)
class Corpus:
    """A tokenised stream cut into contiguous blocks: train | val | probe_train | probe_test.

    Blocks are contiguous (never shuffled tokens) so that models and probes see real history.
    """

    name: str
    unit: str  # "char"
    vocab: tuple[str, ...]  # index -> symbol
    parts: dict[str, np.ndarray]  # PARTS -> 1-D int64 token ids
    info: dict[str, float]  # facts about the source, e.g. {"entropy_rate_bits": 1.23}
    # what the base model learns to emit at step t, as an offset (see extraction/offsets.py):
    # -1 the next symbol (language modelling), d >= 0 the input d steps back (delayed copy)
    target: int = -1

    def fingerprint(self) -> str:
        """sha256 hex of name, vocab and every part's bytes: identifies the data in caches."""
        digest = hashlib.sha256(json.dumps([self.name, list(self.vocab)]).encode())
        for part in PARTS:
            tokens = np.ascontiguousarray(self.parts[part], dtype=np.int64)
            digest.update(f"\n{part}:{len(tokens)}\n".encode())
            digest.update(tokens.tobytes())
        return digest.hexdigest()


def split_blocks(
    tokens: np.ndarray, fractions: Mapping[str, float], source: str = "the stream"
) -> dict[str, np.ndarray]:
    """Cut tokens into contiguous blocks (views) in PARTS order, sized by fractions.

    fractions must have exactly the keys PARTS, values > 0 summing to 1; source names the data
    in the error raised when a block would be shorter than 2 tokens.
    """
    if set(fractions) != set(PARTS):
        wrong = sorted(set(fractions) ^ set(PARTS))
        keys = ", ".join(f"data.split.{key}" for key in wrong)
        raise ConfigError(
            f"data.split has wrong keys ({keys}): it needs exactly {', '.join(PARTS)} "
            "(e.g. data.split={train: 0.8, val: 0.1, probe_train: 0.05, probe_test: 0.05})"
        )
    for part in PARTS:
        if not fractions[part] > 0:
            raise ConfigError(f"data.split.{part}={fractions[part]}: must be > 0 (e.g. 0.05)")
    total = sum(fractions[part] for part in PARTS)
    if abs(total - 1) > 1e-6:
        listed = ", ".join(f"data.split.{part}={fractions[part]}" for part in PARTS)
        raise ConfigError(f"data.split fractions sum to {total} ({listed}): they must sum to 1")
    n = len(tokens)
    ends = np.rint(np.cumsum([fractions[part] for part in PARTS]) * n).astype(int)
    ends[-1] = n
    starts = np.concatenate([[0], ends[:-1]])
    for part, start, end in zip(PARTS, starts, ends, strict=True):
        if end - start < 2:
            raise ConfigError(
                f"data.split.{part}={fractions[part]} leaves {end - start} of the {n} tokens of "
                f"{source}: every part needs at least 2; use more data or raise data.split.{part}"
            )
    return {part: tokens[start:end] for part, start, end in zip(PARTS, starts, ends, strict=True)}
