"""CTC base training with random batches vs batches grouped by length, measured side by side.

Both variants train the project's CTC system (log-mel features, SpecAugment, stacked LSTMs,
CTC loss, gradient clipping) in a Lightning Trainer for the same epochs over the same
synthetic speech corpus, whose utterances range from one word to many (a wide length
distribution, as in read speech). They differ only in `model.training.batch_by_length`.
Rounds alternate between the variants (which one goes first, too) so that load from other
processes hits them alike;
each variant gets a fresh model with the same initial weights. Printed: the share of each
epoch's samples that is padding, the median seconds per epoch, and the ratio
by-length / random.

    PYTHONPATH=src python benchmarks/speech_batching.py [--utterances 192 --rounds 3 --threads 1]
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import tempfile
import time
from functools import partial

import torch

from memsig.data.batches import padding_fraction
from memsig.data.features import SpecAugment
from memsig.data.synth_speech import synth_speech_corpus
from memsig.data.utterances import utterance_loader
from memsig.models.asr import CTCSystem
from memsig.models.ctc_encoder import CTCEncoder
from memsig.runtime.trainer import quiet_trainer

VARIANTS = {"random": False, "by_length": True}


def epoch_seconds(net: CTCEncoder, vocab, loader, epochs: int) -> float:
    """Seconds per epoch of the project's CTC training (no validation)."""
    system = CTCSystem(net, partial(torch.optim.Adam, lr=3e-3), vocab, SpecAugment(2, 12, 2, 5))
    trainer = quiet_trainer(
        epochs, accelerator="cpu", devices=1, limit_val_batches=0, gradient_clip_val=1.0
    )
    start = time.perf_counter()
    trainer.fit(system, loader)
    return (time.perf_counter() - start) / epochs


def epoch_batches(sampler, epoch: int) -> list[list[int]]:
    """The sampler's batches of one epoch, as the Trainer will draw them."""
    sampler.set_epoch(epoch)
    return list(sampler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utterances", type=int, default=192, help="training utterances")
    parser.add_argument("--words", type=int, nargs=2, default=[1, 12], help="words per utterance")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timed fit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as root:
        corpus = synth_speech_corpus(
            root,
            seed=0,
            letters="abcdefghijkl",
            utterances={"train": args.utterances, "val": 1, "probe_train": 1, "probe_test": 1},
            speakers={"train": 4, "val": 1, "probe_train": 1, "probe_test": 1},
            words=tuple(args.words),
        )
        train = corpus.parts["train"]
        seconds = [u.num_samples / corpus.sample_rate for u in train]
        print(
            f"{len(train)} utterances of {min(seconds):.1f}-{max(seconds):.1f} s "
            f"(median {statistics.median(seconds):.1f} s), batches of {args.batch}"
        )
        torch.manual_seed(0)
        base = CTCEncoder(
            len(corpus.vocab), stack=3, subsample=3, layers=args.layers, hidden=args.hidden
        )
        loaders = {
            name: utterance_loader(
                train, corpus.sample_rate, args.batch, True, seed=0, by_length=by_length, shard=True
            )
            for name, by_length in VARIANTS.items()
        }
        lengths = [u.num_samples for u in train]
        padding = {}
        for name, loader in loaders.items():
            padding[name] = statistics.mean(
                padding_fraction(epoch_batches(loader.sampler, epoch), lengths)
                for epoch in range(args.epochs)
            )
        times = {name: [] for name in VARIANTS}
        for round_ in range(args.rounds):
            names = list(loaders) if round_ % 2 == 0 else list(reversed(loaders))
            for name in names:
                net, loader = copy.deepcopy(base), loaders[name]
                times[name].append(epoch_seconds(net, corpus.vocab, loader, args.epochs))
            print(
                f"round {round_ + 1}: "
                + ", ".join(f"{n} {t[-1]:.2f} s/epoch" for n, t in times.items()),
                flush=True,
            )
    median = {name: statistics.median(ts) for name, ts in times.items()}
    for name in VARIANTS:
        print(
            f"{name:10s} padding {padding[name]:.3f}  {median[name]:6.2f} s/epoch  (rounds: "
            + ", ".join(f"{t:.2f}" for t in times[name])
            + ")"
        )
    print(f"ratio by_length / random: {median['by_length'] / median['random']:.3f}x")


if __name__ == "__main__":
    main()
