"""Cost of offsets: the signature stage with many offsets (64) vs 1 offset, per probe kind,
measured side by side.

All offsets x views train as one module (linear, mlp) or come from one Gram matrix per view
(ridge), so the stage's cost should barely grow with the number of offsets. Runs alternate
(kind A: 1, many; kind B: 1, many; ...) in fresh run dirs on the same base checkpoint, so
machine noise hits all alike; extraction is included in every run.

    .venv/bin/python benchmarks/offsets_cost.py [--repeats 3] [--many 64] [--kinds linear ridge]
        [--epochs 8] [overrides...]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from memsig.config.compose import CONFIG_DIR
from memsig.pipeline.run import run


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
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=gru")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    root = Path(tempfile.mkdtemp(prefix="memsig-bench-"))
    base = root / "base"
    run(config(base, ["stage=base", "model.training.max_epochs=2", *args.overrides]))
    ckpt = base / "checkpoints" / "base.ckpt"
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


if __name__ == "__main__":
    main()
