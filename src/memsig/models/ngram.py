"""Count-based character n-gram LM with interpolated Kneser-Ney smoothing.

It is the reference point for what a fixed window of n-1 characters can do: its state is that
window and nothing else. Training is counting: every order's n-grams are numbered as base-V
integers (oldest character most significant) and counted with `np.unique` in one pass, so
fitting a million characters takes a second, not a Python loop per character.

Smoothing (Chen & Goodman's interpolated Kneser-Ney, one discount D per order):

    P_m(w | h) = (c(h, w) - D_m)^+ / c(h) + D_m * N1+(h .) / c(h) * P_{m-1}(w | h')

where h' drops h's oldest character, c are raw counts at the highest order and continuation
counts N1+(. h w) below it, D_m = n1 / (n1 + 2 n2) from the count-of-counts (clipped to
[0.1, 0.9] so every character keeps some mass), and P_0 is uniform. A context never seen
backs off to its longest seen suffix, so every row sums to 1 for seen and unseen contexts.

Rows of every seen context are stored whole (contexts{m}: sorted ids, probs{m}: [C_m, V]) as
buffers, so the base checkpoint stays plain tensors and lookups are one searchsorted per order.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memsig.models.context import PAD, context_windows
from memsig.runtime.units import nats_to_bits

MAX_ID = 2**62  # n-gram ids must fit int64 with room for the next digit


def kn_discount(counts: np.ndarray) -> float:
    """Kneser-Ney's D = n1 / (n1 + 2 n2) from the counts of seen events, clipped to [0.1, 0.9]."""
    n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
    return float(np.clip(n1 / (n1 + 2 * n2), 0.1, 0.9)) if n1 + n2 else 0.5


class NGramLM(nn.Module):
    """Order-n character LM fitted by :meth:`fit`; views `context` (one-hot window) and `logits`."""

    # views whose features are one-hot indicators: probes centre them instead of whitening
    indicator_views = frozenset({"context"})

    def __init__(self, vocab_size: int, order: int = 5) -> None:
        super().__init__()
        if order < 1:
            raise ValueError(
                f"order={order}: must be >= 1 (an order-n model reads the last n-1 characters), "
                "e.g. model.order=5"
            )
        if vocab_size**order >= MAX_ID:
            raise ValueError(
                f"order={order} with {vocab_size} symbols overflows 64-bit n-gram ids: "
                f"use model.order <= {int(math.log(MAX_ID, vocab_size)) - 1}"
            )
        self.vocab_size = vocab_size
        self.order = order
        for m in range(1, order + 1):
            self.register_buffer(f"contexts{m}", torch.zeros(0, dtype=torch.int64))
            self.register_buffer(f"probs{m}", torch.zeros(0, vocab_size))

    @property
    def view_dims(self) -> dict[str, int]:
        dims = {"context": (self.order - 1) * self.vocab_size} if self.order > 1 else {}
        dims["logits"] = self.vocab_size
        return dims

    def fit(self, tokens: np.ndarray) -> None:
        """Count every order's n-grams of `tokens` and store the smoothed rows."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if len(tokens) < self.order:
            raise ValueError(
                f"{len(tokens)} training tokens cannot fit an order-{self.order} model"
            )
        v = self.vocab_size

        def gram_ids(m: int) -> np.ndarray:
            windows = np.lib.stride_tricks.sliding_window_view(tokens, m)
            return windows @ (v ** np.arange(m - 1, -1, -1, dtype=np.int64))

        lower_contexts, lower_rows = np.zeros(1, dtype=np.int64), np.full((1, v), 1.0 / v)
        for m in range(1, self.order + 1):
            if m == self.order:
                ids, counts = np.unique(gram_ids(m), return_counts=True)
            else:  # continuation counts: how many distinct characters precede each m-gram
                ids, counts = np.unique(np.unique(gram_ids(m + 1)) % v**m, return_counts=True)
            contexts, row = np.unique(ids // v, return_inverse=True)
            table = np.zeros((len(contexts), v))
            table[row, ids % v] = counts
            total = table.sum(1, keepdims=True)
            d = kn_discount(counts)
            seen = (table > 0).sum(1, keepdims=True)
            back = lower_rows[np.searchsorted(lower_contexts, contexts % v ** max(m - 2, 0))]
            lower_rows = np.maximum(table - d, 0) / total + d * seen / total * back
            lower_contexts = contexts
            setattr(self, f"contexts{m}", torch.as_tensor(contexts))
            setattr(self, f"probs{m}", torch.as_tensor(lower_rows, dtype=torch.float32))

    def _log_probs(self, windows: Tensor) -> Tensor:
        """log P(next | window) [B, T, V] from the longest seen suffix of each window."""
        v = self.vocab_size
        out = self.probs1[0].expand(*windows.shape[:-1], v)
        for m in range(2, self.order + 1):
            suffix = windows[..., windows.shape[-1] - (m - 1) :]
            powers = v ** torch.arange(m - 2, -1, -1, device=windows.device)
            ids = (suffix.clamp_min(0) * powers).sum(-1)
            table = getattr(self, f"contexts{m}")
            index = torch.searchsorted(table, ids).clamp_max(len(table) - 1)
            found = (suffix != PAD).all(-1) & (table[index] == ids)
            out = torch.where(found.unsqueeze(-1), getattr(self, f"probs{m}")[index], out)
        return out.log()

    def forward(self, tokens: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Log-probabilities [B, T, V] of the next token, and the window to carry on."""
        windows, last = context_windows(tokens, state, self.order - 1)
        return self._log_probs(windows), last

    def views(
        self, tokens: Tensor, state: Tensor | None = None, only: Collection[str] | None = None
    ) -> tuple[dict[str, Tensor], Tensor]:
        """`context`: the window's characters one-hot (zeros before the stream start), concatenated,
        built only when `only` (the views wanted; None: all) names it; `logits`: the predictive
        log-probabilities."""
        windows, last = context_windows(tokens, state, self.order - 1)
        out = {}
        if self.order > 1 and (only is None or "context" in only):
            onehot = F.one_hot(windows.clamp_min(0), self.vocab_size) * (windows != PAD).unsqueeze(
                -1
            )
            out["context"] = onehot.flatten(-2).float()
        out["logits"] = self._log_probs(windows)
        return out, last

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # the tables' sizes depend on the training text: take them from the checkpoint
        for name in self._buffers:
            if prefix + name in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[prefix + name])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@torch.no_grad()
def bits_per_char(net: nn.Module, tokens: np.ndarray, chunk: int = 65536) -> float:
    """Mean -log2 P(x_{t+1} | x_{..t}) over a stream, read in chunks with the state carried."""
    data = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
    total, state = 0.0, None
    for lo in range(0, len(data) - 1, chunk):
        inputs, targets = data[lo : lo + chunk][None], data[lo + 1 : lo + chunk + 1][None]
        logits, state = net(inputs[:, : targets.shape[1]], state)
        total += F.cross_entropy(logits[0], targets[0], reduction="sum").item()
    return nats_to_bits(total / (len(data) - 1))
