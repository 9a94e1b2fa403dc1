"""Grapheme offsets for frame-level states, from CTC forced alignment.

A speech encoder runs on frames, but offsets are counted in graphemes of the transcript. The
model's own log-probabilities are force-aligned to the reference transcript
(``torchaudio.functional.forced_align``); at each frame the *current grapheme* is the last one
whose aligned span has started, and offset k targets the grapheme k positions before it
(k < 0: after it). Frames before the first grapheme have no current grapheme (index -1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio.functional as AF


def min_frames(tokens: Sequence[int]) -> int:
    """Frames a CTC path for tokens needs: one per token plus a blank between repeats."""
    tokens = list(tokens)
    return len(tokens) + sum(a == b for a, b in zip(tokens, tokens[1:], strict=False))


def current_graphemes(log_probs: torch.Tensor, tokens: Sequence[int], blank: int) -> np.ndarray:
    """Per frame of log_probs [T, C], the index in `tokens` of the current grapheme (-1 before
    the first). Needs T >= min_frames(tokens)."""
    targets = torch.as_tensor(list(tokens), dtype=torch.int32, device=log_probs.device)[None]
    path, scores = AF.forced_align(log_probs[None].float(), targets, blank=blank)
    spans = AF.merge_tokens(path[0], scores[0].exp(), blank=blank)
    starts = np.array([span.start for span in spans])
    assert len(starts) == len(tokens), "a CTC path emits every token once"
    return np.searchsorted(starts, np.arange(len(log_probs)), side="right") - 1


@dataclass(frozen=True)
class FrameTargets:
    """Graphemes of a part's frames: the transcripts as one stream, and per frame the stream
    index of its current grapheme (-1: none) and of its utterance's first and last grapheme."""

    tokens: np.ndarray  # [graphemes] all transcripts concatenated, in frame order
    anchors: np.ndarray  # [frames]
    first: np.ndarray  # [frames]
    last: np.ndarray  # [frames]

    def valid_positions(self, offsets: Sequence[int]) -> np.ndarray:
        """Frames whose target exists inside their own utterance for every offset."""
        back, ahead = max(0, max(offsets)), max(0, -min(offsets))
        ok = (self.anchors >= 0) & (self.anchors - back >= self.first)
        return np.flatnonzero(ok & (self.anchors + ahead <= self.last))

    def save(self, path) -> None:
        np.savez(path, tokens=self.tokens, anchors=self.anchors, first=self.first, last=self.last)

    @classmethod
    def load(cls, path) -> FrameTargets:
        with np.load(path) as stored:
            return cls(*(stored[k] for k in ("tokens", "anchors", "first", "last")))
