"""Offsets and their targets: index shifts of the input stream, never copies per offset.

k >= 0 is the input k steps in the past (k = 0 is the current input), k < 0 the input |k|
steps in the future.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from memsig.runtime.errors import ConfigError


def resolve_offsets(offsets: Sequence | None, max_offset: int | None) -> list[int]:
    """The probed offsets: `probe.offsets` when given, else 0..`probe.max_offset`."""
    if offsets is None:
        if not isinstance(max_offset, int) or isinstance(max_offset, bool) or max_offset < 0:
            raise ConfigError(
                f"probe.max_offset={max_offset!r}: must be an integer >= 0 "
                "(e.g. probe.max_offset=12), or give probe.offsets=[0,1,2]"
            )
        return list(range(max_offset + 1))
    if isinstance(offsets, str | bytes) or not isinstance(offsets, Sequence):
        raise ConfigError(
            f"probe.offsets={offsets!r}: must be a list of integers (k >= 0 looks k steps "
            "back, k < 0 ahead), e.g. probe.offsets=[0,1,2,-1], or null to probe "
            "0..probe.max_offset"
        )
    resolved = []
    for k in offsets:
        if not isinstance(k, int) or isinstance(k, bool):
            raise ConfigError(
                f"probe.offsets contains {k!r}: offsets must be integers "
                "(k >= 0 looks k steps back, k < 0 ahead), e.g. probe.offsets=[0,1,2,-1]"
            )
        resolved.append(k)
    if not resolved:
        raise ConfigError("probe.offsets=[]: give at least one offset, e.g. probe.offsets=[0,1]")
    if len(set(resolved)) != len(resolved):
        raise ConfigError(f"probe.offsets={resolved}: offsets must not repeat")
    return resolved


def valid_positions(length: int, offsets: Sequence[int]) -> range:
    """Positions t of a part where x_{t-k} exists for every offset k (one set for all k)."""
    start = max(0, max(offsets))
    stop = length + min(0, min(offsets))
    return range(start, max(start, stop))


def offset_targets(tokens: np.ndarray, positions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Targets [len(positions), len(offsets)]: tokens[t - k], one gather for all offsets."""
    return tokens[positions[:, None] - offsets[None, :]]


def input_windows(tokens: np.ndarray, positions: np.ndarray, m: int, pad: int) -> np.ndarray:
    """The last m inputs x_{t-m+1..t} at every position t, oldest first, [len(positions), m];
    slots before the stream's start hold `pad`."""
    padded = np.concatenate([np.full(m - 1, pad), np.asarray(tokens, dtype=np.int64)])
    return padded[positions[:, None] + np.arange(m)[None, :]]


def fit_val_split(
    positions: np.ndarray,
    offsets: Sequence[int],
    val_fraction: float,
    blocks: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Probe-train positions cut into a fit block and a validation block (its tail), separated
    so that no target is shared: by a gap as wide as the offset range in a stream, at the
    utterance boundary nearest the cut when `blocks` (each position's utterance) is given."""
    cut = int(len(positions) * (1 - val_fraction))
    if blocks is None:
        gap = max(abs(k) for k in offsets) + 1
        fit = positions[: max(0, cut - gap)]
    else:
        boundaries = np.flatnonzero(blocks[1:] != blocks[:-1]) + 1
        if len(boundaries):
            cut = int(boundaries[np.abs(boundaries - cut).argmin()])
        fit = positions[:cut]
    val = positions[cut:]
    if len(fit) < 2 or len(val) < 2:
        raise ConfigError(
            "the probe-train part is too short to split into fit and validation blocks: "
            "enlarge data.split.probe_train (or data.utterances.probe_train) or lower "
            "probe.max_offset"
        )
    return fit, val
