"""Fixed windows of the last characters, carried across chunks: the state of context models.

A context model's state after reading x_t is the window x_{t-w+1..t} (oldest first); before the
stream has supplied w characters the missing slots hold PAD. Windows of every position come
from one `unfold`, never a loop over time steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

PAD = -1  # a window slot before the start of the stream


def context_windows(tokens: Tensor, state: Tensor | None, width: int) -> tuple[Tensor, Tensor]:
    """Windows [B, T, width] (oldest first) after each position, and the last one as new state.

    `state` is the window before `tokens[:, 0]` ([B, width], or None at the stream start).
    """
    batch = tokens.shape[0]
    if state is None:
        state = tokens.new_full((batch, width), PAD)
    history = torch.cat([state[:, 1:], tokens], dim=1) if width > 0 else tokens[:, :0]
    windows = history.unfold(1, width, 1) if width > 0 else tokens.new_empty(*tokens.shape, 0)
    return windows, windows[:, -1] if tokens.shape[1] else state
