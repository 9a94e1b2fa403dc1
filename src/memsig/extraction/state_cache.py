"""Run a frozen model once over a token stream and keep every state view in memory-mapped files.

The stream is cut into `segments` rows read in parallel; each row after the first starts
`burn_in` tokens early so its state is warmed up on real history before its first kept
position, and the state is carried from chunk to chunk along each row. Peak memory is one
chunk of states, whatever the length of the stream.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from memsig.runtime.atomic import write_json_atomic
from memsig.runtime.errors import MemsigError, NumericalError
from memsig.runtime.faults import fault_point
from memsig.runtime.progress import LoopProgress

MANIFEST = "manifest.json"
log = logging.getLogger(__name__)

# a model's `views(tokens, state, only=views wanted)` -> (views, state to carry on)
StatesFn = Callable[..., tuple[dict[str, torch.Tensor], object]]


@dataclass(frozen=True)
class ExtractSettings:
    """How the stream is read: parallel rows, steps per forward call, warm-up, stored dtype."""

    segments: int = 32
    chunk: int = 256
    burn_in: int = 256
    dtype: str = "float32"


@dataclass(frozen=True)
class StateCache:
    """Cached views of one part: arrays [N, D] opened read-only. Moments are not kept here:
    probes whiten with those of their fit positions (probes/moments.py), which leave out
    padding and validation rows."""

    directory: Path
    views: dict[str, np.ndarray]


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


def _runs(positions: np.ndarray) -> list[tuple[int, int, int]]:
    """(index in `positions`, first position, length) of every run of consecutive positions."""
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    starts = np.concatenate([[0], breaks])
    lengths = np.diff(np.concatenate([starts, [len(positions)]]))
    return [(int(i), int(positions[i]), int(n)) for i, n in zip(starts, lengths, strict=True)]


def _manifest(directory: Path) -> dict | None:
    """The manifest of a complete cache in `directory` (None: no complete cache)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def cached_identity(directory: Path) -> dict | None:
    """The identity a complete cache in `directory` was made for (None: no complete cache)."""
    manifest = _manifest(directory)
    return None if manifest is None else manifest.get("identity")


def open_cache(directory: Path, identity: Mapping) -> StateCache | None:
    """The cache in `directory` if its manifest matches `identity` exactly and every file it
    lists has the size it was written with; else None (the caller rebuilds it)."""
    stored = _manifest(directory)
    if stored is None or stored.get("identity") != json.loads(json.dumps(identity)):
        return None
    damaged = _damaged_files(directory, stored.get("sizes"))
    if damaged:
        log.warning("the cache in %s is damaged (%s): extracting again", directory, damaged)
        return None
    views = {view: np.load(_file(directory, view), mmap_mode="r") for view in identity["views"]}
    return StateCache(directory, views)


def _damaged_files(directory: Path, sizes: Mapping[str, int] | None) -> str:
    """What is wrong with the files a manifest lists (empty when nothing is)."""
    if not sizes:
        return "no file sizes in its manifest"
    wrong = []
    for name, size in sizes.items():
        path = directory / name
        actual = path.stat().st_size if path.is_file() else None
        if actual != size:
            wrong.append(f"{name}: {actual if actual is not None else 'missing'}, not {size} bytes")
    return "; ".join(wrong)


CACHE_FIXES = (
    "probe fewer views (probe.views=[...]), or store float16 (probe.extract.dtype=float16)"
)


def check_free_space(
    directory: Path,
    needed: int,
    margin: float = 1.1,
    what: str = "the state cache",
    fixes: str = CACHE_FIXES,
) -> None:
    """Refuse to start work whose files the disk cannot hold, before writing anything."""
    free = shutil.disk_usage(directory).free
    if needed * margin > free:
        raise MemsigError(
            f"{what} needs {needed / 2**30:.2f} GiB in {directory} but only "
            f"{free / 2**30:.2f} GiB is free: free disk space, {fixes}"
        )


class RowFile:
    """One view's ``.npy`` file of a fixed shape, filled block of rows by block of rows with
    plain file writes: several times cheaper than stores into a fresh memory map, which fault
    every page in one by one."""

    def __init__(self, path: Path, dtype: str, shape: tuple[int, int]) -> None:
        header = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        self.offset, self.dtype = header.offset, header.dtype
        self.row_bytes = header.dtype.itemsize * shape[1]
        del header  # the file now holds the header and its full (sparse) size
        self.file = path.open("r+b")

    def write_rows(self, first: int, rows: np.ndarray) -> None:
        self.file.seek(self.offset + first * self.row_bytes)
        self.file.write(np.ascontiguousarray(rows, dtype=self.dtype).data)

    def close(self) -> None:
        """Flush to disk, so that nothing written later (the manifest) can outlive the rows."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


class CacheWriter:
    """View files of `length` rows, filled by position.

    Used by every extractor: :meth:`write` stores kept states, :meth:`finish` closes the files
    and writes the manifest (last, so an interrupted extraction is never mistaken for a
    cache), which records every file's size (so a damaged file is noticed, not read).
    """

    def __init__(
        self, directory: Path, view_dims: Mapping[str, int], length: int, dtype: str
    ) -> None:
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        check_free_space(directory, length * sum(view_dims.values()) * np.dtype(dtype).itemsize)
        self.directory, self.length = directory, length
        self.out = {
            v: RowFile(_file(directory, v), dtype, (length, d)) for v, d in view_dims.items()
        }
        self.count = 0  # rows written so far

    def write(self, positions: np.ndarray, views: Mapping[str, torch.Tensor]) -> None:
        """Store views[v] (rows in the order of `positions`).

        Rows go to the files as blocks, one per run of consecutive positions (extractors write
        whole stretches of the stream)."""
        if len(positions) == 0:
            return
        runs = _runs(positions)
        for v, out in self.out.items():
            values = views[v].float()
            if not torch.isfinite(values.sum()):  # any NaN or inf reaches the sum
                raise NumericalError(
                    f"view {v} holds NaN or inf near position {int(positions[0])}: the model "
                    "is numerically broken; retrain it with a lower learning rate"
                )
            array = values.cpu().numpy()
            for source, target, length in runs:
                out.write_rows(target, array[source : source + length])
        self.count += len(positions)

    def finish(self, identity: Mapping) -> StateCache:
        for out in self.out.values():
            out.close()
        self.out.clear()
        sizes = {p.name: p.stat().st_size for p in sorted(self.directory.iterdir()) if p.is_file()}
        write_json_atomic(self.directory / MANIFEST, {"identity": identity, "sizes": sizes})
        cached = open_cache(self.directory, identity)
        assert cached is not None
        return cached


@torch.no_grad()
def build_cache(
    states_fn: StatesFn,
    tokens: np.ndarray,
    directory: Path,
    identity: Mapping,
    settings: ExtractSettings,
    device: torch.device | str = "cpu",
) -> StateCache:
    """Extract every view of `identity["views"]` for `tokens` into `directory` (manifest last).

    `states_fn` is a model's `views`: it is told (`only=`) which views are cached, so it can skip
    deriving the others."""
    cached = open_cache(directory, identity)
    if cached is not None:
        return cached
    view_dims: Mapping[str, int] = identity["views"]
    wanted = frozenset(view_dims)
    length = len(tokens)
    writer = CacheWriter(directory, view_dims, length, settings.dtype)
    first, warm, keep = _row_layout(length, settings.segments, settings.burn_in)
    steps = int((warm + keep).max())
    index = np.minimum(first[:, None] + np.arange(steps)[None, :], length - 1)
    row_tokens = torch.as_tensor(np.asarray(tokens, dtype=np.int64)[index], device=device)
    state = None
    progress = LoopProgress(f"extraction {directory.name}", length, "positions")
    for lo in range(0, steps, settings.chunk):
        hi = min(lo + settings.chunk, steps)
        views, state = states_fn(row_tokens[:, lo:hi], state, only=wanted)
        step = np.arange(lo, hi)[None, :]
        kept = (step >= warm[:, None]) & (step < (warm + keep)[:, None])  # [rows, steps]
        positions = (first[:, None] + step)[kept]
        if kept.all():  # kept states, row-major like `positions`: no copy needed
            kept_views = {v: views[v].reshape(-1, d) for v, d in view_dims.items()}
        else:
            mask = torch.as_tensor(kept, device=row_tokens.device)
            kept_views = {v: views[v][mask] for v in view_dims}
        writer.write(positions, kept_views)
        progress.update(writer.count)
        fault_point("extract")
    return writer.finish(identity)
