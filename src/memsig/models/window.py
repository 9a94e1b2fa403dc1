"""Neural fixed-window ("neural n-gram") character LM: the learned counterpart of the count model.

It reads exactly the last n-1 characters, like the n-gram model, but through embeddings and an
MLP, so its hidden layers show how a learned state spreads a fixed window's characters.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from memsig.models.checks import check_sizes
from memsig.models.context import PAD, context_windows


class WindowLM(nn.Module):
    """Embeddings of the last `order - 1` characters, concatenated -> `layers` x (Linear, tanh)
    -> linear vocabulary head. Slots before the stream start use a learned padding embedding."""

    def __init__(
        self,
        vocab_size: int,
        order: int = 5,
        layers: int = 2,
        hidden: int = 256,
        embed: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        sizes = {"vocab_size": (vocab_size, 2), "order": (order, 2), "layers": (layers, 1)}
        check_sizes({**sizes, "hidden": (hidden, 1), "embed": (embed, 1)}, dropout)
        self.vocab_size = vocab_size
        self.order = order
        self.layers = layers
        self.hidden = hidden
        self.embedding = nn.Embedding(vocab_size + 1, embed)  # last row: before the stream start
        self.mlp = nn.ModuleList(
            nn.Linear((order - 1) * embed if i == 0 else hidden, hidden) for i in range(layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)

    @property
    def view_dims(self) -> dict[str, int]:
        dims = {f"layer{i}.h": self.hidden for i in range(1, self.layers + 1)}
        dims["logits"] = self.vocab_size
        return dims

    def _run(self, tokens: Tensor, state: Tensor | None) -> tuple[list[Tensor], Tensor, Tensor]:
        """Every hidden layer's output [B, T, H], the logits, and the window to carry on."""
        windows, last = context_windows(tokens, state, self.order - 1)
        x = self.embedding(windows.masked_fill(windows == PAD, self.vocab_size)).flatten(-2)
        hidden = []
        for layer in self.mlp:
            x = torch.tanh(layer(x))
            hidden.append(x)
            x = self.dropout(x)
        return hidden, self.head(x), last

    def forward(self, tokens: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Unnormalised logits [B, T, V] of the next token, and the window to carry on."""
        _, logits, last = self._run(tokens, state)
        return logits, last

    def views(
        self, tokens: Tensor, state: Tensor | None = None, only: Collection[str] | None = None
    ) -> tuple[dict[str, Tensor], Tensor]:
        """`layer{L}.h` for every hidden layer and `logits` (log-softmax), as [B, T, D]; all
        come with the forward pass, so `only` (the views wanted) changes nothing."""
        hidden, logits, last = self._run(tokens, state)
        out = {f"layer{i}.h": h for i, h in enumerate(hidden, start=1)}
        out["logits"] = F.log_softmax(logits, dim=-1)
        return out, last
