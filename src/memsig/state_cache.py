"""Run a frozen model once over a token stream and keep every state view in memory-mapped files.

The stream is cut into `segments` rows read in parallel; each row after the first starts
`burn_in` tokens early so its state is warmed up on real history before its first kept
position, and the state is carried from chunk to chunk along each row. Peak memory is one
chunk of states, whatever the length of the stream.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from memsig.atomic import write_json_atomic

MANIFEST = "manifest.json"

StatesFn = Callable[[torch.Tensor, object], tuple[dict[str, torch.Tensor], object]]


@dataclass(frozen=True)
class ExtractSettings:
    """How the stream is read: parallel rows, steps per forward call, warm-up, stored dtype."""

    segments: int = 32
    chunk: int = 256
    burn_in: int = 256
    dtype: str = "float32"


@dataclass(frozen=True)
class StateCache:
    """Cached views of one part: arrays [N, D] opened read-only, plus per-view mean and
    covariance (float64), gathered during extraction so probes can whiten for free."""

    directory: Path
    views: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    cov: dict[str, np.ndarray]

    @property
    def length(self) -> int:
        return len(next(iter(self.views.values())))


def _row_layout(
    length: int, segments: int, burn_in: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: first token read, number of warm-up steps, number of kept positions."""
    rows = max(1, min(segments, length))
    seg = -(-length // rows)
    starts = np.arange(rows) * seg
    keep = np.minimum(starts + seg, length) - starts
    warm = np.minimum(burn_in, starts)
    return starts - warm, warm, keep


def _file(directory: Path, view: str) -> Path:
    return directory / f"{view}.npy"


def _moments_file(directory: Path, view: str) -> Path:
    return directory / f"{view}.moments.npz"


def open_cache(directory: Path, identity: Mapping) -> StateCache | None:
    """The cache in `directory` if its manifest matches `identity` exactly, else None."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return None
    try:
        stored = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if stored.get("identity") != json.loads(json.dumps(identity)):
        return None
    views, mean, cov = {}, {}, {}
    for view in identity["views"]:
        views[view] = np.load(_file(directory, view), mmap_mode="r")
        with np.load(_moments_file(directory, view)) as moments:
            mean[view], cov[view] = moments["mean"], moments["cov"]
    return StateCache(directory, views, mean, cov)


@torch.no_grad()
def build_cache(
    states_fn: StatesFn,
    tokens: np.ndarray,
    directory: Path,
    identity: Mapping,
    settings: ExtractSettings,
    device: torch.device | str = "cpu",
) -> StateCache:
    """Extract every view of `identity["views"]` for `tokens` into `directory` (manifest last)."""
    cached = open_cache(directory, identity)
    if cached is not None:
        return cached
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    view_dims: Mapping[str, int] = identity["views"]
    length = len(tokens)
    first, warm, keep = _row_layout(length, settings.segments, settings.burn_in)
    steps = int((warm + keep).max())
    index = np.minimum(first[:, None] + np.arange(steps)[None, :], length - 1)
    row_tokens = torch.as_tensor(np.asarray(tokens, dtype=np.int64)[index], device=device)

    out = {
        v: np.lib.format.open_memmap(
            _file(directory, v), mode="w+", dtype=settings.dtype, shape=(length, d)
        )
        for v, d in view_dims.items()
    }
    total = {v: np.zeros(d) for v, d in view_dims.items()}
    total_outer = {v: np.zeros((d, d)) for v, d in view_dims.items()}
    state = None
    for lo in range(0, steps, settings.chunk):
        hi = min(lo + settings.chunk, steps)
        views, state = states_fn(row_tokens[:, lo:hi], state)
        for v in view_dims:
            chunk = views[v].float().cpu().numpy()
            for row in range(len(first)):
                a, b = max(lo, warm[row]), min(hi, warm[row] + keep[row])
                if a >= b:
                    continue
                values = chunk[row, a - lo : b - lo]
                out[v][first[row] + a : first[row] + b] = values
                total[v] += values.sum(0)
                wide = values.astype(np.float64)
                total_outer[v] += wide.T @ wide
    for v, array in out.items():
        array.flush()
        mean = total[v] / length
        cov = total_outer[v] / length - np.outer(mean, mean)
        np.savez(_moments_file(directory, v), mean=mean, cov=cov)
    del out
    write_json_atomic(directory / MANIFEST, {"identity": identity})
    cached = open_cache(directory, identity)
    assert cached is not None
    return cached
