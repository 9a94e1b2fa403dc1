"""Fused multi-offset probe training vs the straightforward method, measured side by side.

Both train linear softmax probes on the same cached states (an LSTM's views of a Markov
stream) for the same offsets and the same number of epochs: the fused way is one
MultiOffsetProbe for all offsets (one matmul per view), the straightforward way one probe per
offset, trained one after the other. Rounds alternate between the two so that load from other
processes hits both alike; the ratio is loop time / fused time per round, median over rounds
(goal: at least 10x at 32 offsets).

    .venv/bin/python benchmarks/fused_vs_loop.py [--offsets 32] [--rounds 3] [--epochs 2]
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from memsig.data.markov import markov_corpus
from memsig.extraction.loader import PositionBatches, position_loader
from memsig.extraction.offsets import valid_positions
from memsig.extraction.state_cache import ExtractSettings, StateCache, build_cache
from memsig.models.recurrent import StackedRNN
from memsig.probes.moments import fit_moments
from memsig.probes.multi_offset import MultiOffsetProbe
from memsig.runtime.trainer import quiet_trainer

SPLIT = {"train": 0.05, "val": 0.05, "probe_train": 0.8, "probe_test": 0.1}


def train_probe(cache: StateCache, tokens: np.ndarray, offsets: list[int], epochs: int) -> float:
    """Warm start, train for `epochs` and validate every epoch, as the signature stage does;
    returns the mean validation cross-entropy (bits) of the best heads."""
    views = {v: a.shape[1] for v, a in cache.views.items()}
    optimizer = functools.partial(torch.optim.Adam, lr=0.01)
    positions = np.asarray(valid_positions(len(tokens), offsets))
    cut = int(0.9 * len(positions))
    data = functools.partial(PositionBatches, cache.views, tokens, offsets=np.asarray(offsets))
    fit, val = data(positions=positions[:cut]), data(positions=positions[cut:])
    probe = MultiOffsetProbe(views, len(offsets), 6, optimizer, *fit_moments(fit, views, 1024))
    trainer = quiet_trainer(epochs, accelerator="cpu")
    probe.warm_start(position_loader(fit, 1024, shuffle=False, shard=False))
    trainer.fit(
        probe,
        position_loader(fit, 1024, shuffle=True, shard=True),
        position_loader(val, 1024, shuffle=False, shard=True),
    )
    return float(probe.best_val_xent.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offsets", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--chars", type=int, default=100_000, help="probe-train characters")
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    corpus = markov_corpus(3, 6, 3, int(args.chars / 0.8), seed=0, split=SPLIT)
    tokens = corpus.parts["probe_train"]
    torch.manual_seed(0)
    net = StackedRNN(vocab_size=6, cell="lstm", layers=1, hidden=args.hidden, embed=16).eval()
    views = {"layer1.h": args.hidden}
    cache = build_cache(
        net.views,
        tokens,
        Path(tempfile.mkdtemp(prefix="memsig-bench-")) / "cache",
        {"views": views},
        ExtractSettings(),
    )
    offsets = list(range(args.offsets))
    fused_times, loop_times, ratios = [], [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        fused = train_probe(cache, tokens, offsets, args.epochs)
        fused_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        looped = [train_probe(cache, tokens, [k], args.epochs) for k in offsets]
        loop_times.append(time.perf_counter() - start)
        ratios.append(loop_times[-1] / fused_times[-1])
    print(
        f"{args.offsets} offsets, {len(tokens)} positions, 1 view of {args.hidden} units, "
        f"{args.epochs} epochs, {args.rounds} rounds (alternating):"
    )
    print(f"  fused: median {statistics.median(fused_times):.2f} s  (runs: {fused_times})")
    print(f"  loop : median {statistics.median(loop_times):.2f} s  (runs: {loop_times})")
    print(f"  mean best val xent (bits): fused {fused:.4f}, loop {np.mean(looped):.4f}")
    print(f"  ratio loop/fused: {statistics.median(ratios):.1f}x  (goal: at least 10x)")


if __name__ == "__main__":
    main()
