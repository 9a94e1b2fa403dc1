"""Cost of offsets: the signature stage with many offsets (64) vs 1 offset, per probe kind,
measured side by side.

All offsets x views train as one module (linear, mlp) or come from one Gram matrix per view
(ridge), so the stage's cost should barely grow with the number of offsets. Runs alternate
(kind A: 1, many; kind B: 1, many; ...) in fresh run dirs on the same base checkpoint, so
machine noise hits all alike; extraction is included in every run.

With `--probe-phase` the linear probe's own phase is timed in process instead, on states
extracted once: one training epoch, one validation pass (what early stopping reads), and the
whole fit-and-test with `--epochs` fixed epochs (default 2), 1 offset and `--many` offsets
alternating in every round; the ratios are taken round by round (median and range). With one
thread these are CPU seconds of the process, which other work on a shared machine disturbs
less than wall time.

    .venv/bin/python benchmarks/offsets_cost.py [--repeats 3] [--many 64] [--kinds linear ridge]
        [--epochs 8] [overrides...]
    .venv/bin/python benchmarks/offsets_cost.py --probe-phase [--many 128] [--repeats 3]
        [--epochs 2] [overrides...]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from memsig.config.compose import CONFIG_DIR
from memsig.extraction.loader import position_loader
from memsig.extraction.probe_parts import position_sets, probe_parts
from memsig.extraction.state_cache import ExtractSettings
from memsig.models.checkpoint import load_base_checkpoint, restore_network
from memsig.pipeline.plan import prepare
from memsig.pipeline.run import run
from memsig.probes.fit import ProbeSetup, build_probe, fit_and_test
from memsig.probes.multi_offset import indicator_columns


def config(run_dir: Path, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[
                "logger=none",
                "trainer.enable_progress_bar=false",
                f"paths.output_dir={run_dir}",
                *overrides,
            ],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--epochs",
        type=int,
        default=0,
        help="fixed probe epochs (no early stopping); 0: the stage as configured (early stopping)",
    )
    parser.add_argument("--many", type=int, default=64, help="offsets compared with 1")
    parser.add_argument("--kinds", nargs="+", default=["linear", "ridge"], help="probe kinds")
    parser.add_argument(
        "--probe-phase",
        action="store_true",
        help="time the linear probe's phase in process (epoch, validation pass, fit and test)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=gru")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    root = Path(tempfile.mkdtemp(prefix="memsig-bench-"))
    base = root / "base"
    run(config(base, ["stage=base", "model.training.max_epochs=2", *args.overrides]))
    ckpt = base / "checkpoints" / "base.ckpt"
    if args.probe_phase:
        probe_phase(root, ckpt, args)
        return
    fixed = (
        [f"probe.max_epochs={args.epochs}", f"probe.patience={args.epochs}"] if args.epochs else []
    )
    counts = (1, args.many)
    times = {(kind, count): [] for kind in args.kinds for count in counts}
    epochs = {key: [] for key in times}
    for repeat in range(args.repeats):
        for kind, count in times:
            offsets = f"probe.offsets=[{','.join(str(k) for k in range(count))}]"
            cfg = config(
                root / f"{kind}{count}-{repeat}",
                [
                    "stage=signature",
                    f"base_ckpt={ckpt}",
                    f"probe={kind}",
                    offsets,
                    *fixed,
                    *args.overrides,
                ],
            )
            start = time.perf_counter()
            signature = run(cfg)
            times[kind, count].append(time.perf_counter() - start)
            epochs[kind, count].append(signature.probe["epochs"])
            assert len(signature.offsets) == count
    views = len(signature.views)
    mode = f"{args.epochs} fixed probe epochs" if args.epochs else "early stopping (as configured)"
    print(f"signature stage, {views} views, {mode}, median of {args.repeats}:")
    for kind in args.kinds:
        median = {count: statistics.median(times[kind, count]) for count in counts}
        for count in counts:
            runs = ", ".join(f"{t:.2f}" for t in times[kind, count])
            print(
                f"  {kind:6s} {count:2d} offset(s): {median[count]:7.2f} s  "
                f"(runs: {runs}; epochs: {epochs[kind, count]})"
            )
        ratio = median[args.many] / median[1]
        print(f"  {kind:6s} ratio {args.many}/1: {ratio:.2f}x  (goal: at most 1.5x)")
    if "ridge" in args.kinds and "linear" in args.kinds:
        speed = statistics.median(times["linear", args.many]) / statistics.median(
            times["ridge", args.many]
        )
        print(f"  linear / ridge at {args.many} offsets: {speed:.2f}x")


def probe_phase(root: Path, ckpt: Path, args: argparse.Namespace) -> None:
    """The linear probe's phase at 1 and `args.many` offsets, alternating, on one state cache."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*self.log.*")  # steps run without a trainer
    epochs = args.epochs or 2
    counts = (1, args.many)
    phases = ("training epoch", "validation pass", f"fit and test ({epochs} epochs)")
    times = {(phase, count): [] for phase in phases for count in counts}
    for repeat in range(args.repeats):
        for count in counts:
            setup, sets = probe_inputs(root, ckpt, count, repeat, epochs, args.overrides)
            first, second = phase_times(setup, sets)
            times[phases[0], count].append(first)
            times[phases[1], count].append(second)
            start = time.process_time()
            fit_and_test(setup, sets, [count, repeat])
            times[phases[2], count].append(time.process_time() - start)
    print(f"linear probe phase, 1 vs {args.many} offsets, {args.repeats} rounds, 1 thread, CPU s:")
    for phase in phases:
        ratios = [m / o for o, m in zip(times[phase, 1], times[phase, args.many], strict=True)]
        print(
            f"  {phase:26s} 1: {spread(times[phase, 1])} s   {args.many}: "
            f"{spread(times[phase, args.many])} s   ratio {spread(ratios)}x"
        )


def probe_inputs(root: Path, ckpt: Path, count: int, repeat: int, epochs: int, overrides):
    """What the signature stage hands the probe: its setup and the fit / val / test sets (the
    states are extracted by the first call and read from the cache after)."""
    offsets = f"probe.offsets=[{','.join(str(k) for k in range(count))}]"
    fixed = [f"probe.max_epochs={epochs}", f"probe.patience={epochs}"]
    run_dir = root / f"phase{count}-{repeat}"
    cfg = config(run_dir, ["stage=signature", f"base_ckpt={ckpt}", offsets, *fixed, *overrides])
    plan = prepare(cfg)
    net = restore_network(load_base_checkpoint(plan.base_ckpt))
    settings = ExtractSettings(**cfg.probe.extract)
    identity = {"checkpoint": str(ckpt), "views": net.view_dims, "settings": vars(settings)}
    device = torch.device("cpu")
    parts = probe_parts(net, plan.corpus, identity, settings, plan.offsets, root / "cache", device)
    sets = position_sets(parts, plan.offsets, cfg.probe.val_fraction)
    views = dict(net.view_dims)
    indicators = indicator_columns(net, views)
    setup = ProbeSetup(cfg, run_dir, views, len(plan.corpus.vocab), device, indicators)
    return setup, sets


def phase_times(setup: ProbeSetup, sets) -> tuple[float, float]:
    """CPU seconds of one training epoch (steps, backward, optimiser) and of one validation pass
    (steps and the epoch-end choice of the best heads), on a probe built as the stage builds it."""
    cfg, (fit, val, _) = setup.cfg, sets
    batch = cfg.probe.batch_size
    probe = build_probe(setup, fit, val)
    optimizer = probe.configure_optimizers()["optimizer"]
    loader = position_loader(
        fit, batch, shuffle=True, shard=False, seed=cfg.seed, min_steps=cfg.probe.min_steps
    )
    start = time.process_time()
    for step, data in enumerate(loader):
        optimizer.zero_grad()
        probe.training_step(data, step).backward()
        optimizer.step()
    middle = time.process_time()
    with torch.no_grad():
        for step, data in enumerate(position_loader(val, batch, shuffle=False, shard=False)):
            probe.validation_step(data, step)
        probe.on_validation_epoch_end()
    return middle - start, time.process_time() - middle


def spread(values: list[float]) -> str:
    """Median [min-max]."""
    return f"{statistics.median(values):7.3f} [{min(values):.3f}-{max(values):.3f}]"


if __name__ == "__main__":
    main()
