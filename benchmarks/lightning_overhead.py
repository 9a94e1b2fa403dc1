"""Lightning's overhead on base training: the project's Lightning base training (CharLM in a
Trainer, gradient clipping, carried state) against a plain PyTorch loop doing the same work on
the same model, data and number of steps; optionally the same with a torch.compile'd forward.

Rounds alternate between the variants so that load from other processes hits them alike;
each variant gets a fresh model with the same initial weights. Each fit is timed in two
parts: its first step (with --compile, the first compiled fit compiles there) and the steps
after it (the steady state). Printed: the median seconds per variant and the ratio
lightning / plain (goal: at most 1.15); with --compile also the compilation time and the
steady-state ratio compiled / eager.

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


class FirstStepEnd(L.Callback):
    """Records when the first training step ends."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == 1:
            self.time = time.perf_counter()


def lightning_seconds(net, loader, steps: int, clip: float, compile: bool) -> tuple[float, float]:
    """Fit the project's CharLM for `steps` optimizer steps (no validation, no logging);
    seconds of the first step and of the steps after it."""
    lm = CharLM(net, partial(torch.optim.Adam, lr=3e-3), compile=compile)
    first = FirstStepEnd()
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
        callbacks=[first],
    )
    start = time.perf_counter()
    trainer.fit(lm, loader)
    return first.time - start, time.perf_counter() - first.time


def plain_seconds(net, loader, steps: int, clip: float, compile: bool) -> tuple[float, float]:
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
            if done == 1:
                first = time.perf_counter()
            if done == steps:
                break
        state = None
    return first - start, time.perf_counter() - first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=64)
    parser.add_argument("--compile", action="store_true", help="also time a compiled forward")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    split = {"train": 0.6, "val": 0.1, "probe_train": 0.2, "probe_test": 0.1}
    corpus = markov_corpus(3, 6, 3, 250_000, seed=0, split=split)
    loader = stream_loader(corpus.parts["train"], args.batch, args.bptt, shard=True)
    base = StackedRNN(len(corpus.vocab), "lstm", args.layers, args.hidden, 32, 0.0)
    variants = {
        "lightning": partial(lightning_seconds, compile=False),
        "plain": partial(plain_seconds, compile=False),
    }
    if args.compile:
        variants["lightning+compile"] = partial(lightning_seconds, compile=True)
        variants["plain+compile"] = partial(plain_seconds, compile=True)
    times = {name: [] for name in variants}  # per round: (first step, steps after it)
    for round_ in range(args.rounds):
        for name, run in variants.items():
            times[name].append(run(copy.deepcopy(base), loader, args.steps, 1.0))
        print(
            f"round {round_ + 1}: "
            + ", ".join(
                f"{n} {sum(t[-1]):.2f} s (first step {t[-1][0]:.2f})" for n, t in times.items()
            ),
            flush=True,
        )
    total = {name: statistics.median(sum(t) for t in ts) for name, ts in times.items()}
    first = {name: statistics.median(t[0] for t in ts) for name, ts in times.items()}
    steady = {name: statistics.median(t[1] for t in ts) for name, ts in times.items()}
    for name in variants:
        print(
            f"{name:18s} {total[name]:7.2f} s  ({args.steps} steps; first step "
            f"{first[name]:.2f} s, the other {args.steps - 1} {steady[name]:.2f} s; rounds: "
            + ", ".join(f"{sum(t):.2f}" for t in times[name])
            + ")"
        )
    print(f"ratio lightning / plain: {total['lightning'] / total['plain']:.3f}x")
    if args.compile:
        # torch.compile caches per function: only the first compiled fit of the process compiles
        compiling = times["lightning+compile"][0][0] - first["lightning"]
        print(f"compiling: {compiling:.2f} s (round 1's first compiled step minus an eager one)")
        for loop in ("lightning", "plain"):
            print(
                f"steady-state ratio compiled / eager ({loop}): "
                f"{steady[loop + '+compile'] / steady[loop]:.3f}x"
            )


if __name__ == "__main__":
    main()
