"""Grapheme CTC speech encoder: log-mel features -> stacked LSTM layers -> linear CTC head.

The parts are separate modules (preprocessor, frame stacking, encoder layers, head) built
from config; SpecAugment lives in the training system, not here, so the network a checkpoint
restores computes exactly what the probes read. The blank is the last output class
(``blank = vocab_size``). LSTM cell states per frame come from :func:`lstm_cell_states`
(batched, no loop over time), for the backward direction on length-reversed sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from memsig.data.features import FrameStack, LogMel
from memsig.models.checks import check_sizes
from memsig.models.recurrent import lstm_cell_states

AugmentFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence's first lengths[b] steps of x [B, T, D]; padding stays in place."""
    steps = x.shape[1]
    t = torch.arange(steps, device=x.device)[None, :]
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class CTCEncoder(nn.Module):
    """Stacked one-layer LSTMs (so every layer's output is kept) over log-mel frames."""

    def __init__(
        self,
        vocab_size: int,
        sample_rate: int = 16000,
        n_mels: int = 80,
        window_ms: float = 25.0,
        hop_ms: float = 10.0,
        normalise: str = "utterance",
        stack: int = 1,
        subsample: int = 1,
        layers: int = 3,
        hidden: int = 128,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_sizes({"vocab_size": (vocab_size, 1), "layers": (layers, 1), "hidden": (hidden, 1)})
        check_sizes({"n_mels": (n_mels, 1)}, dropout)
        self.vocab_size = vocab_size
        self.blank = vocab_size
        self.layers, self.hidden, self.bidirectional = layers, hidden, bidirectional
        self.preprocessor = LogMel(sample_rate, n_mels, window_ms, hop_ms, normalise)
        self.stacking = FrameStack(stack, subsample)
        self.input_dim = n_mels * stack
        width = hidden * (2 if bidirectional else 1)
        self.rnns = nn.ModuleList(
            nn.LSTM(
                self.input_dim if i == 0 else width,
                hidden,
                batch_first=True,
                bidirectional=bidirectional,
            )
            for i in range(layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, vocab_size + 1)

    @property
    def view_dims(self) -> dict[str, int]:
        width = self.hidden * (2 if self.bidirectional else 1)
        dims = {"input": self.input_dim}
        for i in range(1, self.layers + 1):
            dims[f"layer{i}.h"] = width
            dims[f"layer{i}.c"] = width
        dims["logits"] = self.vocab_size + 1
        return dims

    def frame_lengths(self, sample_lengths: Tensor) -> Tensor:
        """Encoder frames of utterances with these sample counts (after subsampling)."""
        return self.stacking.out_lengths(self.preprocessor.frame_lengths(sample_lengths))

    def features(
        self, waves: Tensor, lengths: Tensor, augment: AugmentFn | None = None
    ) -> tuple[Tensor, Tensor]:
        """Normalised (and, in training, augmented) stacked frames fed to layer 1."""
        feats, frames = self.preprocessor(waves, lengths)
        if augment is not None:
            feats, frames = augment(feats, frames)
        return self.stacking(feats, frames)

    def _layer(self, rnn: nn.LSTM, x: Tensor, lengths: Tensor) -> Tensor:
        if not self.bidirectional:  # padding at the end cannot reach earlier frames
            return rnn(x)[0]
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=x.shape[1])[0]

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Each layer's input and output sequence."""
        inputs, outputs, x = [], [], feats
        for rnn in self.rnns:
            y = self._layer(rnn, x, lengths)
            inputs.append(x)
            outputs.append(y)
            x = self.dropout(y)
        return inputs, outputs

    def forward(
        self, waves: Tensor, lengths: Tensor, augment: AugmentFn | None = None
    ) -> tuple[Tensor, Tensor]:
        """CTC log-probabilities [B, T, vocab_size + 1] and frame lengths."""
        feats, frames = self.features(waves, lengths, augment)
        _, outputs = self.encode(feats, frames)
        return F.log_softmax(self.head(self.dropout(outputs[-1])), dim=-1), frames

    def _cells(self, rnn: nn.LSTM, x: Tensor, h: Tensor, lengths: Tensor) -> Tensor:
        """Cell states of every frame, from each direction's inputs and outputs."""
        zeros = h.new_zeros(1, h.shape[0], self.hidden)
        forward = lstm_cell_states(x, h[..., : self.hidden], zeros, zeros, rnn.all_weights[0])
        if not self.bidirectional:
            return forward
        backward = lstm_cell_states(
            reverse_padded(x, lengths),
            reverse_padded(h[..., self.hidden :], lengths),
            zeros,
            zeros,
            rnn.all_weights[1],
        )
        return torch.cat([forward, reverse_padded(backward, lengths)], dim=-1)

    def views(
        self, waves: Tensor, lengths: Tensor, only: Collection[str] | None = None
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Every view of :attr:`view_dims` per encoder frame [B, T, D], and frame lengths; with
        `only`, the cell states not named in it are not derived."""
        feats, frames = self.features(waves, lengths)
        inputs, outputs = self.encode(feats, frames)
        out = {"input": feats}
        for i, (rnn, x, h) in enumerate(zip(self.rnns, inputs, outputs, strict=True), start=1):
            out[f"layer{i}.h"] = h
            if only is None or f"layer{i}.c" in only:
                out[f"layer{i}.c"] = self._cells(rnn, x, h, frames)
        out["logits"] = F.log_softmax(self.head(outputs[-1]), dim=-1)
        return out, frames


def greedy_decode(log_probs: Tensor, lengths: Tensor, blank: int) -> list[list[int]]:
    """Best path per utterance: argmax per frame, repeats merged, blanks dropped."""
    best = log_probs.argmax(-1)
    keep = torch.ones_like(best, dtype=torch.bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != blank
    return [best[b, : lengths[b]][keep[b, : lengths[b]]].tolist() for b in range(len(best))]
