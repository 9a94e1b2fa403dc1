"""Lightning's overhead on base training: the project's Lightning base training (CharLM in a
Trainer, gradient clipping, carried state) against a plain PyTorch loop doing the same work on
the same model, data and number of steps; optionally the same with a torch.compile'd forward.

Rounds alternate between the variants so that load from other processes hits them alike;
each variant gets a fresh model with the same initial weights. Printed: the median seconds
per variant and the ratio lightning / plain (goal: at most 1.15).

    python benchmarks/lightning_overhead.py [--steps 200 --rounds 5 --hidden 128 --compile]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from functools import partial

import lightning as L
import torch
import torch.nn.functional as F

from memsig.data.markov import markov_corpus
from memsig.data.streams import stream_loader
from memsig.models.char_lm import CharLM
from memsig.models.recurrent import StackedRNN, detach_state


def lightning_seconds(net, loader, steps: int, clip: float, compile: bool) -> float:
    """Fit the project's CharLM for `steps` optimizer steps (no validation, no logging)."""
    lm = CharLM(net, partial(torch.optim.Adam, lr=3e-3), ["x"], compile=compile)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        limit_val_batches=0,
        gradient_clip_val=clip,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(lm, loader)
    return time.perf_counter() - start


def plain_seconds(net, loader, steps: int, clip: float, compile: bool) -> float:
    """The same steps in a hand-written loop: forward, loss, backward, clip, Adam."""
    forward = torch.compile(net.forward) if compile else net
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    start = time.perf_counter()
    done, state = 0, None
    while done < steps:
        for inputs, targets in loader:
            logits, state = forward(inputs, state)
            state = detach_state(state)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            optimizer.step()
            done += 1
            if done == steps:
                break
        state = None
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=64)
    parser.add_argument("--compile", action="store_true", help="also time a compiled forward")
    args = parser.parse_args()
    torch.manual_seed(0)
    split = {"train": 0.6, "val": 0.1, "probe_train": 0.2, "probe_test": 0.1}
    corpus = markov_corpus(3, 6, 3, 250_000, seed=0, split=split)
    loader = stream_loader(corpus.parts["train"], args.batch, args.bptt)
    base = StackedRNN(len(corpus.vocab), "lstm", args.layers, args.hidden, 32, 0.0)
    variants = {
        "lightning": partial(lightning_seconds, compile=False),
        "plain": partial(plain_seconds, compile=False),
    }
    if args.compile:
        variants["lightning+compile"] = partial(lightning_seconds, compile=True)
        variants["plain+compile"] = partial(plain_seconds, compile=True)
    times = {name: [] for name in variants}
    for round_ in range(args.rounds):
        for name, run in variants.items():
            times[name].append(run(copy.deepcopy(base), loader, args.steps, 1.0))
        print(
            f"round {round_ + 1}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()),
            flush=True,
        )
    median = {name: statistics.median(ts) for name, ts in times.items()}
    for name, seconds in median.items():
        print(
            f"{name:18s} {seconds:7.2f} s  ({args.steps} steps; rounds: "
            + ", ".join(f"{t:.2f}" for t in times[name])
            + ")"
        )
    print(f"ratio lightning / plain: {median['lightning'] / median['plain']:.3f}x")
    if args.compile:
        print(
            f"ratio compiled / eager (lightning): "
            f"{median['lightning+compile'] / median['lightning']:.3f}x"
        )


if __name__ == "__main__":
    main()
