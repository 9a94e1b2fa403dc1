"""Run a frozen speech encoder once over a part's utterances: every view per frame into
memory-mapped files, and each frame's grapheme targets from CTC forced alignment.

Utterances are read `batch` at a time, batched by length (less padding to run through the
encoder); utterance u's frames are rows ``start_u .. start_u + frames_u - 1`` of every view,
whatever batch it came in. Peak memory is one batch of states.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from memsig.data.features import frame_mask
from memsig.data.speech import Utterance
from memsig.data.utterances import utterance_loader
from memsig.extraction.alignment import FrameTargets, current_graphemes, min_frames
from memsig.extraction.state_cache import CacheWriter, StateCache, open_cache
from memsig.models.ctc_encoder import CTCEncoder
from memsig.runtime.progress import LoopProgress

log = logging.getLogger(__name__)
TARGETS = "targets.npz"


def open_frame_cache(directory: Path, identity: Mapping) -> tuple[StateCache, FrameTargets] | None:
    """The frame cache in `directory` and its targets if complete for `identity`, else None."""
    cached = open_cache(directory, identity)
    if cached is None or not (directory / TARGETS).is_file():
        return None
    return cached, FrameTargets.load(directory / TARGETS)


@torch.no_grad()
def build_frame_cache(
    net: CTCEncoder,
    utterances: Sequence[Utterance],
    sample_rate: int,
    directory: Path,
    identity: Mapping,
    batch: int,
    dtype: str,
    device: torch.device | str = "cpu",
) -> tuple[StateCache, FrameTargets]:
    """Views of `identity["views"]` for every frame, and the frames' grapheme targets."""
    cached = open_frame_cache(directory, identity)
    if cached is not None:
        return cached
    frames = net.frame_lengths(torch.tensor([u.num_samples for u in utterances])).numpy()
    frame_start = np.concatenate([[0], np.cumsum(frames)])
    token_start = np.concatenate([[0], np.cumsum([len(u.tokens) for u in utterances])])
    anchors = np.full(int(frame_start[-1]), -1, dtype=np.int64)
    first = np.repeat(token_start[:-1], frames)
    last = np.repeat(token_start[1:] - 1, frames)
    writer = CacheWriter(directory, identity["views"], len(anchors), dtype)
    unaligned = 0
    loader = utterance_loader(utterances, sample_rate, batch, shuffle=False, shard=False)
    progress = LoopProgress(f"extraction {directory.name}", len(utterances), "utterances")
    done = 0
    # an unshuffled sampler yields the same batches on every pass: the loader's batch b holds
    # the utterances of the sampler's batch b
    for index, (waves, lengths, _, _) in zip(loader.sampler, loader, strict=True):
        views, got = net.views(waves.to(device), lengths.to(device), only=identity["views"])
        expected = frames[index]
        assert got.cpu().numpy().tolist() == expected.tolist(), "frame counts must agree"
        mask = frame_mask(got, views["logits"].shape[1])
        positions = np.concatenate([np.arange(frame_start[u], frame_start[u + 1]) for u in index])
        writer.write(positions, {v: views[v][mask] for v in identity["views"]})
        for b, u in enumerate(index):
            tokens = utterances[u].tokens
            if expected[b] < min_frames(tokens):
                unaligned += 1  # too few frames for its transcript: no frame gets a target
                continue
            local = current_graphemes(views["logits"][b, : expected[b]], tokens, net.blank)
            span = slice(frame_start[u], frame_start[u + 1])
            anchors[span] = np.where(local >= 0, token_start[u] + local, -1)
        done += len(index)
        progress.update(done)
    if unaligned:
        log.warning(
            "%d of %d utterances have fewer frames than graphemes and are left out of probing",
            unaligned,
            len(utterances),
        )
    tokens = np.concatenate([u.tokens for u in utterances]).astype(np.int64)
    targets = FrameTargets(tokens, anchors, first, last)
    targets.save(directory / TARGETS)
    return writer.finish(identity), targets
