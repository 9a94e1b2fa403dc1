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
from memsig.distributed import rank_zero_first
from memsig.errors import ConfigError
from memsig.frame_cache import build_frame_cache, open_frame_cache
from memsig.probes.alignment import FrameTargets
from memsig.probes.loader import PositionBatches
from memsig.probes.offsets import valid_positions
from memsig.state_cache import ExtractSettings, StateCache, build_cache, open_cache

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
    for part in ("probe_train", "probe_test"):
        directory, part_identity = cache_dir / part, {**identity, "part": part}
        if isinstance(corpus, SpeechCorpus):
            cache, targets = _shared_frame_cache(
                net, corpus, part, directory, part_identity, settings, device
            )
            positions = targets.valid_positions(offsets)
            parts[part] = ProbePart(
                cache, targets.tokens, positions, targets.anchors, targets.first
            )
        else:
            tokens = corpus.parts[part]
            cache = _shared_cache(net, tokens, directory, part_identity, settings, device)
            parts[part] = ProbePart(
                cache, tokens, np.asarray(valid_positions(len(tokens), offsets))
            )
    return parts


def position_sets(parts: dict[str, ProbePart], offsets: list[int], val_fraction: float):
    """Probe fit / validation / test positions; validation is the tail block of probe-train,
    separated from the fit block so that no target is shared: by a gap as wide as the offset
    range in a stream, at an utterance boundary for speech."""
    offs = np.asarray(offsets, dtype=np.int64)
    train = parts["probe_train"]
    train_positions = train.positions
    cut = int(len(train_positions) * (1 - val_fraction))
    if train.blocks is None:
        gap = max(abs(k) for k in offsets) + 1
        fit_positions = train_positions[: max(0, cut - gap)]
    else:
        blocks = train.blocks[train_positions]
        boundaries = np.flatnonzero(blocks[1:] != blocks[:-1]) + 1
        if len(boundaries):  # the utterance boundary nearest to the asked-for cut
            cut = int(boundaries[np.abs(boundaries - cut).argmin()])
        fit_positions = train_positions[:cut]
    val_positions = train_positions[cut:]
    if len(fit_positions) < 2 or len(val_positions) < 2:
        raise ConfigError(
            "the probe-train part is too short to split into fit and validation blocks: "
            "enlarge data.split.probe_train (or data.utterances.probe_train) or lower "
            "probe.max_offset"
        )
    test = parts["probe_test"]
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
