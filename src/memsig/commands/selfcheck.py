"""`memsig selfcheck`: known-answer experiments that tell whether signatures can be trusted.

Each experiment runs the real pipeline (Hydra configs, Lightning training, cached states,
fused probes) on a source whose memory demand is known (memsig.data.known_memory), small
enough for a CPU in a minute or two, and compares the measured memory with the expected one:

* repeat source, lags 2 and 3, GRU, `probe.condition_on=1`: the memory beyond the current
  input is clearly positive at offsets 1..n-1 (the state must hold them and the current input
  says nothing about them) and near zero beyond n+3 (at most a few hundredths of a bit, see
  `repeat_conditional_bits`);
* delayed copy, delays 2 and 4, GRU: accuracy >= 0.95 at offsets 0..d (the task needs them)
  and, beyond 2d, at most a fifth of the information at d;
* the count n-gram (order 3) on the repeat source, `probe.condition_on=2`: its `context` view
  is a function of the last 2 inputs, so its memory beyond them is zero;
* an untrained GRU on the delay-4 copy task, a negative control: its state holds recent
  inputs (they are fed into it) but not what the task needs, so the copy rows' accuracy
  criterion must fail (< 0.95 at some offset 0..4), and its fading memory leaves near zero
  information beyond offset 8.

Exit status 1 when any row fails.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from memsig.config.compose import CONFIG_DIR
from memsig.data.known_memory import repeat_conditional_bits
from memsig.models.checkpoint import build_network, save_base_checkpoint
from memsig.pipeline.plan import prepare
from memsig.pipeline.run import run
from memsig.reports.figures import plt, save_figure
from memsig.signature.record import Signature

VIEW = "layer1.h"
VOCAB_SIZE = 8
# A small GRU that still learns every task in seconds on a CPU.
GRU = [
    "model=gru",
    "model.layers=1",
    "model.hidden=48",
    "model.embed=8",
    "model.training.batch_size=16",
    "model.training.bptt=32",
    "model.training.max_epochs=12",
    "model.training.patience=1",
    "model.optimizer.lr=0.01",
]
# Small data and probes, for every experiment.
SMALL = [
    f"data.vocab_size={VOCAB_SIZE}",
    "data.num_chars=30000",
    "probe.batch_size=512",
    "probe.max_epochs=8",
    "probe.passage_chars=100",
    "probe.extract.segments=4",
    "probe.extract.burn_in=64",
    "probe.extract.chunk=256",
    "trainer.enable_progress_bar=false",
    "logger=none",
    # the models are tiny: a second thread only adds synchronisation, which costs several
    # times the work itself when other processes compete for the cores
    "threads=1",
]
# Largest memory that counts as "none": 5% of the 3 bits a symbol carries (vocab_size 8). A
# trained GRU keeps fading traces a few steps past what its task needs (about 0.06-0.12 bits
# five steps past it), which is memory, but not the memory a source demands.
NEAR_ZERO_BITS = 0.15
NOISE_BITS = 0.05  # how far from zero two probes may land on the same information


@dataclass(frozen=True)
class Row:
    """One line of the table: what was checked, the expected and measured values, verdict."""

    experiment: str
    quantity: str
    expected: str
    measured: float
    passed: bool


@dataclass(frozen=True)
class Experiment:
    """A named configuration and the rows its signature must satisfy."""

    name: str
    overrides: list[str]
    judge: Callable[[Signature], list[Row]]
    untrained: bool = False
    # the curve an optimal state would give (label, bits at offset k), drawn dashed
    expected: tuple[str, Callable[[int], float]] | None = None


def _beyond(signature: Signature, view: str = VIEW) -> dict[int, float]:
    record = signature.extra["conditional_memory"]["views"][view]["beyond_bits"]
    return dict(zip(signature.offsets, record, strict=True))


def _repeat(lag: int, p: float = 0.2, vocab_size: int = VOCAB_SIZE) -> Experiment:
    name = f"repeat lag={lag}"

    def judge(signature: Signature) -> list[Row]:
        beyond = _beyond(signature)
        needed = [beyond[k] for k in range(1, lag)]
        optimal = min(repeat_conditional_bits(k, 1, lag, p, vocab_size) for k in range(1, lag))
        far = [beyond[k] for k in signature.offsets if k > lag + 3]
        return [
            Row(
                name,
                f"min memory beyond x_t at k=1..{lag - 1} (bits)",
                f">= {optimal / 2:.2f} (optimal {optimal:.2f})",
                min(needed),
                min(needed) >= optimal / 2,
            ),
            Row(
                name,
                f"max memory beyond x_t at k>{lag + 3} (bits)",
                f"<= {NEAR_ZERO_BITS}",
                max(far),
                max(far) <= NEAR_ZERO_BITS,
            ),
        ]

    return Experiment(
        name,
        [
            *GRU,
            "data=repeat",
            f"data.lag={lag}",
            f"data.p={p}",
            f"probe.max_offset={lag + 6}",
            f"probe.views=[{VIEW}]",
            "probe.condition_on=1",
        ],
        judge,
        expected=(
            "optimal: beyond last 1",
            lambda k: repeat_conditional_bits(k, 1, lag, p, vocab_size),
        ),
    )


def _copy_overrides(delay: int) -> list[str]:
    return [
        *GRU,
        "data=copy",
        f"data.delay={delay}",
        f"probe.max_offset={2 * delay + 3}",
        f"probe.views=[{VIEW}]",
    ]


def _copy_scores(signature: Signature, delay: int) -> tuple[float, float]:
    """The lowest accuracy at offsets 0..d and the most information beyond 2d."""
    scores = signature.views[VIEW]
    by_k = {k: i for i, k in enumerate(signature.offsets)}
    accuracy = min(scores.accuracy[by_k[k]] for k in range(delay + 1))
    far = max(scores.info_bits[i] for k, i in by_k.items() if k > 2 * delay)
    return accuracy, far


def _copy(delay: int) -> Experiment:
    name = f"copy delay={delay}"

    def judge(signature: Signature) -> list[Row]:
        accuracy, far = _copy_scores(signature, delay)
        at_d = signature.views[VIEW].info_bits[signature.offsets.index(delay)]
        return [
            Row(name, f"min accuracy at k=0..{delay}", ">= 0.95", accuracy, accuracy >= 0.95),
            Row(
                name,
                f"max info at k>{2 * delay} (bits)",
                f"<= info at k={delay} / 5 = {at_d / 5:.2f}",
                far,
                far <= at_d / 5,
            ),
        ]

    return Experiment(
        name,
        _copy_overrides(delay),
        judge,
        expected=("optimal: info", lambda k: math.log2(VOCAB_SIZE) if 0 <= k <= delay else 0.0),
    )


def _ngram() -> Experiment:
    name = "n-gram order=3"

    def judge(signature: Signature) -> list[Row]:
        worst = max(abs(b) for b in _beyond(signature, "context").values())
        return [
            Row(
                name,
                "max |memory beyond last 2| of context (bits)",
                f"<= {NOISE_BITS}",
                worst,
                worst <= NOISE_BITS,
            )
        ]

    return Experiment(
        name,
        [
            "model=ngram",
            "model.order=3",
            "data=repeat",
            "data.lag=2",
            "probe.max_offset=6",
            "probe.views=[context]",
            "probe.condition_on=2",
        ],
        judge,
        expected=("exact: beyond last 2", lambda k: 0.0),
    )


def _untrained(delay: int = 4) -> Experiment:
    name = "untrained GRU"

    def judge(signature: Signature) -> list[Row]:
        accuracy, far = _copy_scores(signature, delay)
        return [
            Row(
                name,
                f"min accuracy at k=0..{delay} (copy task)",
                "< 0.95 (nothing learned)",
                accuracy,
                accuracy < 0.95,
            ),
            Row(
                name,
                f"max info at k>{2 * delay} (bits)",
                f"<= {NEAR_ZERO_BITS}",
                far,
                far <= NEAR_ZERO_BITS,
            ),
        ]

    return Experiment(name, _copy_overrides(delay), judge, untrained=True)


BATTERY = (_repeat(2), _repeat(3), _copy(2), _copy(4), _ngram(), _untrained())


def _config(run_dir: Path, overrides: Sequence[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[*SMALL, *overrides, f"paths.output_dir={run_dir}"],
        )


def _untrained_checkpoint(cfg: DictConfig) -> Path:
    """Save the configured network as initialised (seeded), never trained."""
    plan = prepare(cfg)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    torch.manual_seed(cfg.seed)
    net = build_network(model_cfg, len(plan.corpus.vocab))
    path = plan.run_dir / "untrained.ckpt"
    corpus = plan.corpus
    save_base_checkpoint(path, net, model_cfg, list(corpus.vocab), corpus.unit, {}, corpus.target)
    return path


def run_experiment(experiment: Experiment, run_dir: Path) -> tuple[Signature, list[Row]]:
    """Run one experiment in run_dir and judge its signature."""
    overrides = list(experiment.overrides)
    if experiment.untrained:
        checkpoint = _untrained_checkpoint(_config(run_dir, overrides))
        overrides += ["stage=signature", f"base_ckpt={checkpoint}"]
    signature = run(_config(run_dir, overrides))
    return signature, experiment.judge(signature)


def format_table(rows: Sequence[Row]) -> str:
    header = ("experiment", "quantity", "expected", "measured", "result")
    lines = [
        (r.experiment, r.quantity, r.expected, f"{r.measured:.3f}", "pass" if r.passed else "FAIL")
        for r in rows
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    return "\n".join(
        "  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
        for line in (header, *lines)
    )


def selfcheck_figure(results: Sequence[tuple[Experiment, Signature]]) -> plt.Figure:
    """One panel per experiment: information per offset, the memory beyond what is in view
    where it was measured, and the expected curve dashed."""
    fig, axes = plt.subplots(2, -(-len(results) // 2), figsize=(13, 7), squeeze=False)
    for ax, (experiment, signature) in zip(axes.T.ravel(), results, strict=False):
        view = next(iter(signature.views))
        ax.plot(signature.offsets, signature.views[view].info_bits, "o-", ms=3, label="info")
        conditional = signature.extra.get("conditional_memory")
        if conditional is not None:
            beyond = conditional["views"][view]["beyond_bits"]
            m = conditional["condition_on"]
            ax.plot(signature.offsets, beyond, "^:", ms=3, label=f"beyond last {m}")
        if experiment.expected is not None:
            label, curve = experiment.expected
            ax.plot(signature.offsets, [curve(k) for k in signature.offsets], "--", label=label)
        prior = signature.baseline["prior_entropy_bits"]
        ax.plot(signature.offsets, prior, "k--", lw=1, label="prior entropy")
        ax.set(title=f"{experiment.name} ({view})", xlabel="offset k", ylabel="bits")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("memsig selfcheck: known-answer signatures")
    fig.tight_layout()
    return fig


def command(argv: Sequence[str]) -> None:
    """Run the battery, print the table, write the figure; exit 1 if any row fails."""
    parser = argparse.ArgumentParser(
        prog="memsig selfcheck", description="Known-answer experiments: can signatures be trusted?"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("outputs") / "selfcheck" / time.strftime("%Y-%m-%d_%H-%M-%S"),
        help="folder for the runs and selfcheck.png (default outputs/selfcheck/<time> here)",
    )
    args = parser.parse_args(argv)
    logging.getLogger("lightning").setLevel(logging.WARNING)
    rows, results = [], []
    for i, experiment in enumerate(BATTERY):
        started = time.perf_counter()
        signature, judged = run_experiment(
            experiment, args.out / f"{i}_{experiment.name.split()[0]}"
        )
        rows += judged
        results.append((experiment, signature))
        print(f"{experiment.name}: {time.perf_counter() - started:.1f} s", flush=True)
    figure = save_figure(selfcheck_figure(results), args.out / "selfcheck.png")
    print(format_table(rows))
    print(f"figure: {figure}")
    failed = sum(not r.passed for r in rows)
    if failed:
        print(f"memsig selfcheck: {failed} of {len(rows)} checks failed")
        raise SystemExit(1)
    print(f"memsig selfcheck: all {len(rows)} checks passed")
