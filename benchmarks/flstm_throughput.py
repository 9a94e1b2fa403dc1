"""Training throughput of the factorized LSTM relative to the plain LSTM, measured side by side.

Both models get the same hidden size, batch and truncated-BPTT window, and train on the same
random tokens (forward, backward, Adam step, state carried across windows). Rounds alternate
between the models so that load from other processes hits both alike; the reported ratio is
the median over rounds of flstm chars/s divided by lstm chars/s (goal: >= 0.7 on CPU).

    python benchmarks/flstm_throughput.py [--hidden 128 --layers 2 --bases 4 --rank 16 ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from memsig.models.factorized import FactorizedLSTM
from memsig.models.recurrent import StackedRNN, detach_state

VOCAB = 65  # tiny Shakespeare's alphabet size


def chars_per_second(net: nn.Module, tokens: torch.Tensor, steps: int, bptt: int) -> float:
    """Train `net` for `steps` windows of `bptt` characters; characters per second."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    state = None
    start = time.perf_counter()
    for step in range(steps):
        window = tokens[:, step * bptt : (step + 1) * bptt + 1]
        logits, state = net(window[:, :-1], state)
        state = detach_state(state)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), window[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * bptt * tokens.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=128, help="units per layer (both models)")
    parser.add_argument("--layers", type=int, default=2, help="stacked layers (both models)")
    parser.add_argument("--embed", type=int, default=32, help="embedding size (both models)")
    parser.add_argument("--bases", type=int, default=4, help="flstm bases per layer")
    parser.add_argument("--rank", type=int, default=16, help="flstm rank of every basis")
    parser.add_argument("--batch", type=int, default=32, help="parallel streams")
    parser.add_argument("--bptt", type=int, default=64, help="characters per window")
    parser.add_argument("--steps", type=int, default=20, help="training windows per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per model")
    args = parser.parse_args()

    torch.manual_seed(0)
    sizes = {"layers": args.layers, "hidden": args.hidden, "embed": args.embed}
    models = {
        "lstm": StackedRNN(VOCAB, "lstm", **sizes),
        "flstm": FactorizedLSTM(VOCAB, **sizes, bases=args.bases, rank=args.rank),
    }
    tokens = torch.randint(0, VOCAB, (args.batch, args.steps * args.bptt + 1))
    for net in models.values():
        chars_per_second(net, tokens, 2, args.bptt)  # warm-up
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, net in models.items():
            speeds[name].append(chars_per_second(net, tokens, args.steps, args.bptt))
    ratios = [f / p for f, p in zip(speeds["flstm"], speeds["lstm"], strict=True)]
    print(
        f"hidden={args.hidden} layers={args.layers} bases={args.bases} rank={args.rank} "
        f"batch={args.batch} bptt={args.bptt} threads={torch.get_num_threads()}"
    )
    for name, net in models.items():
        params = sum(p.numel() for p in net.parameters())
        print(f"{name:6s} {statistics.median(speeds[name]):10.0f} chars/s  {params:8d} params")
    print(f"flstm/lstm throughput ratio: {statistics.median(ratios):.3f} (goal >= 0.7)")


if __name__ == "__main__":
    main()
