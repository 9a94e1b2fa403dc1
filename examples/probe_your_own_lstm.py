"""Probe your own model: train a character LSTM in plain PyTorch, then ask memsig what its
state remembers about the input k steps back.

The text comes from memsig's repeat source: each character repeats the one 3 steps back with
probability 0.5, else it is drawn uniformly. A good language model must hold the last 3
characters, so its state should decode offsets 0, 1, 2 well and little beyond.

    python examples/probe_your_own_lstm.py      # about half a minute on a CPU

The signature, its figure and everything memsig computed land in outputs/example_lstm/.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import memsig
from memsig.data.known_memory import repeat_corpus


class CharLSTM(nn.Module):
    """Any language model will do: forward(tokens[B, T]) -> logits [B, T, V]."""

    def __init__(self, vocab_size: int, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 16)
        self.lstm = nn.LSTM(16, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(self.embed(tokens))
        return self.head(states)


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    split = {"train": 0.7, "val": 0.1, "probe_train": 0.14, "probe_test": 0.06}
    corpus = repeat_corpus(lag=3, p=0.5, vocab_size=6, num_chars=50000, seed=0, split=split)
    text = {part: "".join(corpus.vocab[i] for i in ids) for part, ids in corpus.parts.items()}

    # 1. a language model trained the usual way, knowing nothing of memsig
    vocab = sorted(set(text["train"]))
    train = torch.tensor([vocab.index(c) for c in text["train"]])
    model = CharLSTM(len(vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        starts = torch.randint(0, len(train) - 65, (32,))
        window = train[starts[:, None] + torch.arange(65)]
        logits = model(window[:, :-1])
        targets = window[:, 1:].reshape(-1)
        loss = nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"trained: loss {loss.item() / np.log(2):.3f} bits/char")

    # 2. its memory signature: probes read each layer's h and c (and the logits) and predict
    # the input k = 0..6 steps back
    signature = memsig.signature_of(
        model,
        {"val": text["val"], "probe_train": text["probe_train"], "probe_test": text["probe_test"]},
        vocab=vocab,
        offsets=range(7),
        run_dir="outputs/example_lstm",
        **{"probe.max_epochs": 6},
    )
    print(f"val/bpc {signature.model['metrics']['val/bpc']:.3f}")
    print("information about the input k steps back (bits), by view:")
    print(f"{'view':<10}" + "".join(f"{f'k={k}':>7}" for k in signature.offsets))
    for view, scores in signature.views.items():
        print(f"{view:<10}" + "".join(f"{bits:7.2f}" for bits in scores.info_bits))
    signature.plot().savefig("outputs/example_lstm/signature_example.png")


if __name__ == "__main__":
    main()
