"""Stacked recurrent character LM whose per-step internal state can be read out.

Probing what a recurrent model remembers needs its state after every input position, but the
fused ``nn.LSTM``/``nn.GRU`` kernels only return the output sequence ``h_1..h_T`` and, for the
LSTM, the *final* cell state ``c_T``. Running the layers one layer at a time keeps every layer's
``h`` sequence; the LSTM cell states are rebuilt from it: the gates in batched matmuls, then
a blocked scan for the linear recurrence in ``c`` (about 2 sqrt(T) batched steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memsig.models.checks import check_sizes

State = list  # one entry per layer: (h, c) tuple of [1, B, H] tensors for LSTM, h [1, B, H] for GRU

_CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU}


def linear_recurrence_scan(a: Tensor, b: Tensor, initial: Tensor) -> Tensor:
    """Return every ``c_t`` of ``c_t = a_t * c_{t-1} + b_t`` with ``c_0 = initial``.

    ``a`` and ``b`` are ``[B, T, H]``, ``initial`` is ``[B, H]``. The steps are cut into about
    sqrt(T) blocks of about sqrt(T) steps: one pass scans all blocks at once from zero (also
    multiplying up each block's ``a``), a second carries the state from block to block, and
    one batched multiply-add adds each block's incoming state. That is ~2 sqrt(T) fused
    operations on cache-sized slices, each element touched a few times; a log-depth
    (Hillis-Steele) scan streams the whole tensor through memory log2(T) times and measured
    tens of times slower on a CPU.
    """
    batch, steps, width = b.shape
    block = max(1, math.isqrt(steps - 1) + 1) if steps else 1
    blocks = -(-steps // block)
    pad = blocks * block - steps
    if pad:  # identity steps (a = 1, b = 0) fill the last block
        a = torch.cat([a, a.new_ones(batch, pad, width)], dim=1)
        b = torch.cat([b, b.new_zeros(batch, pad, width)], dim=1)

    def step_major(x: Tensor) -> Tensor:  # [step in block, B, block, H], a fresh copy
        out = x.new_empty(block, batch, blocks, width)
        return out.copy_(x.view(batch, blocks, block, width).permute(2, 0, 1, 3))

    gain, c = step_major(a), step_major(b)
    for s in range(1, block):  # within every block at once: c from zero, and the product of a
        c[s].addcmul_(gain[s], c[s - 1])
        gain[s].mul_(gain[s - 1])
    incoming = torch.empty_like(c[0])  # [B, block, H]: the state entering each block
    state = initial
    for j in range(blocks):
        incoming[:, j] = state
        state = torch.addcmul(c[-1, :, j], gain[-1, :, j], state)
    c.addcmul_(gain, incoming)
    return c.permute(1, 2, 0, 3).reshape(batch, blocks * block, width)[:, :steps]


def lstm_cell_states(
    x: Tensor, h: Tensor, h0: Tensor, c0: Tensor, weights: Sequence[Tensor]
) -> Tensor:
    """Rebuild the ``[B, T, H]`` cell states of a one-layer LSTM from its inputs and outputs.

    ``weights`` is ``[weight_ih, weight_hh, bias_ih, bias_hh]`` (``nn.LSTM.all_weights[0]``).
    Given all outputs, the previous hidden state of every step is known, so the input, forget
    and cell gates come from two batched matmuls (the output gate is not needed); only the
    linear recurrence in ``c`` remains.
    """
    weight_ih, weight_hh, bias_ih, bias_hh = weights
    hidden = weight_hh.shape[1]
    ifg = slice(0, 3 * hidden)  # PyTorch gate order: input, forget, cell, output
    h_prev = torch.cat([h0.transpose(0, 1), h[:, :-1]], dim=1)
    gates = F.linear(x, weight_ih[ifg], bias_ih[ifg] + bias_hh[ifg])
    gates.view(-1, 3 * hidden).addmm_(h_prev.reshape(-1, hidden), weight_hh[ifg].T)
    gates[..., : 2 * hidden].sigmoid_()
    gates[..., 2 * hidden :].tanh_()
    i, f, g = gates.chunk(3, dim=-1)
    return linear_recurrence_scan(f, i * g, c0[0])


class StackedRNN(nn.Module):
    """Character LM: embedding, ``layers`` stacked one-layer LSTMs/GRUs, linear vocabulary head.

    The layers are separate modules (not one multi-layer ``nn.LSTM``) so that every layer's
    output sequence is available to :meth:`views`. Dropout is applied to each recurrent
    layer's output (so between layers and before the head) in training mode only.
    ``layer_factory`` builds one layer from its input width (default: a one-layer ``nn.LSTM``
    or ``nn.GRU``); an LSTM variant needs ``nn.LSTM``'s call convention and ``all_weights``.
    """

    def __init__(
        self,
        vocab_size: int,
        cell: str = "lstm",
        layers: int = 2,
        hidden: int = 128,
        embed: int = 32,
        dropout: float = 0.0,
        layer_factory: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if cell not in _CELLS:
            raise ValueError(f"cell must be one of {sorted(_CELLS)}, got {cell!r}")
        sizes = {"vocab_size": (vocab_size, 2), "layers": (layers, 1), "hidden": (hidden, 1)}
        check_sizes({**sizes, "embed": (embed, 1)}, dropout)
        self.cell = cell
        self.layers = layers
        self.hidden = hidden
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embed)
        if layer_factory is None:
            layer_factory = partial(_CELLS[cell], hidden_size=hidden, batch_first=True)
        self.rnns = nn.ModuleList(layer_factory(embed if i == 0 else hidden) for i in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)

    @property
    def view_dims(self) -> dict[str, int]:
        """Name and width of every view returned by :meth:`views`, in order."""
        parts = ("h", "c") if self.cell == "lstm" else ("h",)
        dims = {f"layer{i}.{p}": self.hidden for i in range(1, self.layers + 1) for p in parts}
        dims["logits"] = self.vocab_size
        return dims

    def _run(
        self, tokens: Tensor, state: State | None
    ) -> tuple[list[Tensor], list[Tensor], Tensor, State]:
        """Run all layers; return each layer's input and output sequence, logits, final state."""
        x = self.embedding(tokens)
        inputs, outputs, final = [], [], []
        for i, rnn in enumerate(self.rnns):
            y, last = rnn(x, None if state is None else state[i])
            inputs.append(x)
            outputs.append(y)
            final.append(last)
            x = self.dropout(y)
        return inputs, outputs, self.head(x), final

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Return unnormalised ``[B, T, V]`` logits and the final state (to carry across chunks)."""
        _, _, logits, final = self._run(tokens, state)
        return logits, final

    def hidden_states(
        self, tokens: Tensor, state: State | None = None
    ) -> tuple[list[Tensor], State]:
        """Each layer's ``[B, T, H]`` output sequence and the final state, without derived views."""
        _, outputs, _, final = self._run(tokens, state)
        return outputs, final

    def views(
        self, tokens: Tensor, state: State | None = None, only: Collection[str] | None = None
    ) -> tuple[dict[str, Tensor], State]:
        """Return every view in :attr:`view_dims` as ``[B, T, D]`` plus the final state.

        ``views[name][:, t]`` is the state after reading ``tokens[:, t]``; ``"logits"`` is the
        log-softmax next-token distribution at that step. With ``only``, the derived views
        (LSTM cell states, which cost about as much as the forward pass) not named in it are
        skipped; the others come with the forward pass anyway.
        """
        inputs, outputs, logits, final = self._run(tokens, state)
        out: dict[str, Tensor] = {}
        for i, (rnn, x, h) in enumerate(zip(self.rnns, inputs, outputs, strict=True), start=1):
            out[f"layer{i}.h"] = h
            if self.cell == "lstm" and (only is None or f"layer{i}.c" in only):
                if state is None:
                    h0 = c0 = h.new_zeros(1, h.shape[0], self.hidden)
                else:
                    h0, c0 = state[i - 1]
                out[f"layer{i}.c"] = lstm_cell_states(x, h, h0, c0, rnn.all_weights[0])
        out["logits"] = F.log_softmax(logits, dim=-1)
        return out, final


def detach_state(state: State | None) -> State | None:
    """Detach every tensor of ``state`` so truncated BPTT stops at the chunk boundary."""
    if state is None:
        return None
    if isinstance(state, Tensor):  # a context model's window of recent tokens
        return state.detach()
    return [tuple(t.detach() for t in s) if isinstance(s, tuple) else s.detach() for s in state]
