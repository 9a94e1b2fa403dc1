"""State extraction (build_cache) vs a plain forward pass of the base model, side by side.

Both read the same stream in the same layout (parallel rows, chunks, state carried between
chunks, the same warm-up tokens) with the same model under no_grad; extraction also derives
every view (e.g. the LSTM cell states), gathers the moments and writes the memory-mapped cache.
Rounds alternate between the two; the ratio is extraction time / forward time per round,
median over rounds (goal: at most 1.3x).

    .venv/bin/python benchmarks/extraction_cost.py [--chars 200000] [--hidden 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from memsig.models.recurrent import StackedRNN
from memsig.state_cache import ExtractSettings, _row_layout, build_cache


@torch.no_grad()
def plain_forward(net: StackedRNN, tokens: np.ndarray, settings: ExtractSettings) -> None:
    """The model's own forward (logits only) over the rows and chunks extraction reads."""
    first, warm, keep = _row_layout(len(tokens), settings.segments, settings.burn_in)
    steps = int((warm + keep).max())
    index = np.minimum(first[:, None] + np.arange(steps)[None, :], len(tokens) - 1)
    rows = torch.as_tensor(np.asarray(tokens, dtype=np.int64)[index])
    state = None
    for lo in range(0, steps, settings.chunk):
        _, state = net(rows[:, lo : lo + settings.chunk], state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=200_000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    vocab = 65
    net = StackedRNN(vocab, args.cell, args.layers, args.hidden, embed=32).eval()
    tokens = np.random.default_rng(0).integers(0, vocab, size=args.chars)
    settings = ExtractSettings()
    root = Path(tempfile.mkdtemp(prefix="memsig-bench-"))
    identity = {"views": net.view_dims}
    extract_times, forward_times, ratios = [], [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        plain_forward(net, tokens, settings)
        forward_times.append(time.perf_counter() - start)
        shutil.rmtree(root / "cache", ignore_errors=True)
        start = time.perf_counter()
        build_cache(net.views, tokens, root / "cache", identity, settings)
        extract_times.append(time.perf_counter() - start)
        ratios.append(extract_times[-1] / forward_times[-1])
    shutil.rmtree(root)
    dims = sum(net.view_dims.values())
    print(
        f"{args.cell}, {args.layers} layers x {args.hidden}, {args.chars} chars, "
        f"{len(net.view_dims)} views ({dims} floats per position), {args.rounds} rounds:"
    )
    print(f"  forward   : median {statistics.median(forward_times):.2f} s  {forward_times}")
    print(f"  extraction: median {statistics.median(extract_times):.2f} s  {extract_times}")
    print(f"  ratio extraction/forward: {statistics.median(ratios):.2f}x  (goal: at most 1.3x)")


if __name__ == "__main__":
    main()
