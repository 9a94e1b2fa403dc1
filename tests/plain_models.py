"""Language models written in plain PyTorch, as a user would (none of memsig's classes), and
a short training loop: what `model=external` and `memsig.signature_of` must read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn


class PlainLSTM(nn.Module):
    """Embedding, a 2-layer nn.LSTM (batch first), a linear head."""

    def __init__(self, vocab_size: int, hidden: int = 32, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 8)
        self.lstm = nn.LSTM(8, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))
        return self.head(out)


class PlainGRU(nn.Module):
    """Embedding, a 1-layer nn.GRU (time first, given an explicit zero state), a linear head;
    returns (logits, state)."""

    def __init__(self, vocab_size: int, hidden: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 8)
        self.gru = nn.GRU(8, hidden)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed(tokens).transpose(0, 1)
        zeros = x.new_zeros(1, x.shape[1], self.gru.hidden_size)
        out, state = self.gru(x, zeros)
        return self.head(out.transpose(0, 1)), state


def train_lm(model: nn.Module, tokens: np.ndarray, steps: int = 80, seed: int = 0) -> nn.Module:
    """Next-token training on random windows of a stream: a few seconds on a CPU."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = torch.as_tensor(tokens, dtype=torch.long)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        starts = torch.as_tensor(rng.integers(0, len(data) - 65, size=16))
        window = data[starts[:, None] + torch.arange(65)]
        logits = model(window[:, :-1])
        logits = logits[0] if isinstance(logits, tuple) else logits
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def save_model(model: nn.Module, vocab: list[str], directory: Path) -> tuple[Path, Path]:
    """The two files a user hands to model=external: the state_dict and the vocabulary."""
    directory.mkdir(parents=True, exist_ok=True)
    weights, vocab_file = directory / "weights.pt", directory / "vocab.json"
    torch.save(model.state_dict(), weights)
    vocab_file.write_text(json.dumps(vocab))
    return weights, vocab_file
