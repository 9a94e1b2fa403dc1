"""Cost of offsets: the signature stage with 32 offsets vs 1 offset, measured side by side.

All offsets x views train as one module, so the stage's cost should barely grow with the
number of offsets. Runs alternate (1, 32, 1, 32, ...) in fresh run dirs on the same base
checkpoint, so machine noise hits both alike; extraction is included in every run.

    .venv/bin/python benchmarks/offsets_cost.py [--repeats 3] [--epochs 8] [overrides...]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from memsig.config import CONFIG_DIR
from memsig.pipeline import run


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
    times: dict[int, list[float]] = {1: [], 32: []}
    epochs: dict[int, list[int]] = {1: [], 32: []}
    for repeat in range(args.repeats):
        for count in (1, 32):
            offsets = f"probe.offsets=[{','.join(str(k) for k in range(count))}]"
            cfg = config(
                root / f"sig{count}-{repeat}",
                ["stage=signature", f"base_ckpt={ckpt}", offsets, *fixed, *args.overrides],
            )
            start = time.perf_counter()
            signature = run(cfg)
            times[count].append(time.perf_counter() - start)
            epochs[count].append(signature.probe["epochs"])
            assert len(signature.offsets) == count
    one, many = statistics.median(times[1]), statistics.median(times[32])
    views = len(signature.views)
    mode = f"{args.epochs} fixed probe epochs" if args.epochs else "early stopping (as configured)"
    print(f"signature stage, {views} views, {mode}, median of {args.repeats}:")
    for count, median in ((1, one), (32, many)):
        runs = ", ".join(f"{t:.2f}" for t in times[count])
        print(f"  {count:2d} offset(s): {median:7.2f} s  (runs: {runs}; epochs: {epochs[count]})")
    print(f"  ratio 32/1: {many / one:.2f}x  (goal: at most 1.5x)")


if __name__ == "__main__":
    main()
