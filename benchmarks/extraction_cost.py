"""State extraction (build_cache) vs a plain forward pass of the base model, side by side.

Both read the same stream in the same layout (parallel rows, chunks, state carried between
chunks, the same warm-up tokens) with the same model under no_grad; extraction also derives
every view (e.g. the LSTM cell states), gathers the moments and writes the memory-mapped cache.
Each round times the forward, then the extraction of every view, then the extraction of the
views that come with the forward pass (every layer's h and the logits: the LSTM cell states
are skipped, as a run with probe.views=[...] without them does); the ratios are extraction
time / forward time per round, median over rounds (goal: at most 1.3x).

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

from memsig.extraction.state_cache import ExtractSettings, _row_layout, build_cache
from memsig.models.recurrent import StackedRNN


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
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab = 65
    net = StackedRNN(vocab, args.cell, args.layers, args.hidden, embed=32).eval()
    tokens = np.random.default_rng(0).integers(0, vocab, size=args.chars)
    settings = ExtractSettings()
    root = Path(tempfile.mkdtemp(prefix="memsig-bench-"))
    forward_view_dims = {v: d for v, d in net.view_dims.items() if not v.endswith(".c")}
    variants = {"every view": net.view_dims, "forward views": forward_view_dims}
    forward_times, times = [], {name: [] for name in variants}
    ratios = {name: [] for name in variants}
    for _ in range(args.rounds):
        start = time.perf_counter()
        plain_forward(net, tokens, settings)
        forward_times.append(time.perf_counter() - start)
        for name, views in variants.items():
            shutil.rmtree(root / "cache", ignore_errors=True)
            start = time.perf_counter()
            build_cache(net.views, tokens, root / "cache", {"views": views}, settings)
            times[name].append(time.perf_counter() - start)
            ratios[name].append(times[name][-1] / forward_times[-1])
    shutil.rmtree(root)
    print(
        f"{args.cell}, {args.layers} layers x {args.hidden}, {args.chars} chars, "
        f"{args.rounds} rounds, {torch.get_num_threads()} threads"
    )
    print(f"  forward: median {statistics.median(forward_times):.2f} s  {_rounded(forward_times)}")
    for name, views in variants.items():
        print(
            f"  extraction, {name} ({len(views)} views, {sum(views.values())} floats per "
            f"position): median {statistics.median(times[name]):.2f} s  {_rounded(times[name])}"
        )
        print(f"    ratio extraction/forward: {statistics.median(ratios[name]):.2f}x  (goal: 1.3x)")


def _rounded(seconds: list[float]) -> list[float]:
    return [round(s, 2) for s in seconds]


if __name__ == "__main__":
    main()
