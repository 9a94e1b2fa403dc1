"""The probe parts of a corpus: states extracted once per part (a character stream, or speech
utterance by utterance), the positions whose targets exist, and the fit / validation / test
position sets the probes train and are scored on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from memsig.data.corpus import Corpus
from memsig.data.speech import SpeechCorpus
from memsig.extraction.alignment import FrameTargets
from memsig.extraction.frame_cache import TARGETS, build_frame_cache, open_frame_cache
from memsig.extraction.loader import PositionBatches
from memsig.extraction.offsets import fit_val_split, valid_positions
from memsig.extraction.state_cache import (
    ExtractSettings,
    StateCache,
    build_cache,
    cached_identity,
    open_cache,
)
from memsig.runtime.distributed import rank_zero_first
from memsig.runtime.errors import MemsigError

PROBE_PARTS = ("probe_train", "probe_test")
CACHE_WAIT_S = 6 * 3600  # how long other DDP ranks wait for rank 0 to extract the states


@dataclass(frozen=True)
class ProbePart:
    """A probe part's cached states and the targets of its positions: tokens[anchor - k],
    with anchor the position itself (token streams) or its current grapheme (speech frames)."""

    cache: StateCache
    tokens: np.ndarray
    positions: np.ndarray  # positions whose target exists at every offset
    anchors: np.ndarray | None = None  # indexed by position: offset 0's index in tokens
    blocks: np.ndarray | None = None  # indexed by position: its utterance (None: one stream)

    def batches(self, positions: np.ndarray, offsets: np.ndarray) -> PositionBatches:
        return PositionBatches(self.cache.views, self.tokens, positions, offsets, self.anchors)


def probe_parts(
    net: nn.Module,
    corpus: Corpus | SpeechCorpus,
    identity: dict,
    settings: ExtractSettings,
    offsets: list[int],
    cache_dir: Path,
    device: torch.device,
) -> dict[str, ProbePart]:
    """Extract the probe-train and probe-test parts once (a stream or utterance by utterance):
    rank 0 writes each cache, the other DDP ranks wait for it and open it."""
    parts = {}
    for part in PROBE_PARTS:
        directory, part_identity = cache_dir / part, {**identity, "part": part}
        if isinstance(corpus, SpeechCorpus):
            cache, source = _shared_frame_cache(
                net, corpus, part, directory, part_identity, settings, device
            )
        else:
            source = corpus.parts[part]
            cache = _shared_cache(net, source, directory, part_identity, settings, device)
        parts[part] = _probe_part(cache, source, offsets)
    return parts


def cached_probe_parts(
    corpus: Corpus | SpeechCorpus, cache_dir: Path, offsets: list[int], checkpoint_sha256: str
) -> dict[str, ProbePart]:
    """The probe parts a finished run cached, opened without its model (what `memsig audit`
    reads); an error when a part's cache is missing or holds other data or another model."""
    parts = {}
    for part in PROBE_PARTS:
        directory = cache_dir / part
        identity = cached_identity(directory)
        if (
            identity is None
            or identity.get("part") != part
            or identity.get("checkpoint_sha256") != checkpoint_sha256
        ):
            raise MemsigError(
                f"{directory} holds no state cache of this run's model and data: rerun the "
                "run's command in its run dir (the signature stage extracts the states again)"
            )
        if identity.get("data") != corpus.fingerprint():
            raise MemsigError(
                f"the data of {cache_dir.parent} cannot be rebuilt from its config.yaml (data "
                f"{corpus.name!r} gives other tokens than its states were extracted from, e.g. "
                "a run made by memsig.signature_of on tokens passed in, or a changed data "
                "file): audit a run made from a config (`memsig model=external ...`) instead"
            )
        cache = open_cache(directory, identity)
        source = (
            FrameTargets.load(directory / TARGETS)
            if isinstance(corpus, SpeechCorpus)
            else corpus.parts[part]
        )
        parts[part] = _probe_part(cache, source, offsets)
    return parts


def _probe_part(
    cache: StateCache, source: np.ndarray | FrameTargets, offsets: list[int]
) -> ProbePart:
    """A part from its cache and its targets: a token stream, or speech frames' graphemes."""
    if isinstance(source, FrameTargets):
        positions = source.valid_positions(offsets)
        return ProbePart(cache, source.tokens, positions, source.anchors, source.first)
    return ProbePart(cache, source, np.asarray(valid_positions(len(source), offsets)))


def position_sets(parts: dict[str, ProbePart], offsets: list[int], val_fraction: float):
    """Probe fit / validation / test positions (see `fit_val_split`) as position batches."""
    offs = np.asarray(offsets, dtype=np.int64)
    train, test = parts["probe_train"], parts["probe_test"]
    blocks = None if train.blocks is None else train.blocks[train.positions]
    fit_positions, val_positions = fit_val_split(train.positions, offsets, val_fraction, blocks)
    return (
        train.batches(fit_positions, offs),
        train.batches(val_positions, offs),
        test.batches(test.positions, offs),
    )


def _shared_cache(
    net: nn.Module,
    tokens: np.ndarray,
    directory: Path,
    identity: dict,
    settings: ExtractSettings,
    device: torch.device,
) -> StateCache:
    """The state cache of one part, extracted once by rank 0 and opened by every DDP rank."""
    return rank_zero_first(
        lambda: build_cache(net.views, tokens, directory, identity, settings, device),
        lambda: open_cache(directory, identity),
        timeout=CACHE_WAIT_S,
        what=f"the state cache {directory}",
    )


def _shared_frame_cache(
    net: nn.Module,
    corpus: SpeechCorpus,
    part: str,
    directory: Path,
    identity: dict,
    settings: ExtractSettings,
    device: torch.device,
) -> tuple[StateCache, FrameTargets]:
    """The frame cache of one speech part, extracted once by rank 0 and opened by every rank."""
    return rank_zero_first(
        lambda: build_frame_cache(
            net,
            corpus.parts[part],
            corpus.sample_rate,
            directory,
            identity,
            settings.segments,
            settings.dtype,
            device,
        ),
        lambda: open_frame_cache(directory, identity),
        timeout=CACHE_WAIT_S,
        what=f"the frame cache {directory}",
    )
