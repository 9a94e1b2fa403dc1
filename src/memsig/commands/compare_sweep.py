"""`memsig compare MULTIRUN_DIR`: the signatures of a sweep side by side, grouped by what the
sweep varied (seeds pooled), with a mean and a 95% t-interval over seeds per offset.

Writes `compare.csv` (long form: group, view, offset, metric, n, mean, low, high; capacity has
an empty offset), `compare.png` (an overlay of every group's signature, intervals shaded) and
logs the table and figure to W&B (offline unless credentials are set), grouped with the sweep.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

from memsig.reports.figures import save_figure, sweep_figure
from memsig.runtime.atomic import write_csv_atomic
from memsig.runtime.errors import ConfigError
from memsig.signature.record import Signature

COLUMNS = ("group", "view", "offset", "metric", "n", "mean", "low", "high")
SEED = "seed"


def find_runs(multirun_dir: Path) -> list[Path]:
    """Every finished job (a dir holding signature.json) under the multirun dir."""
    runs = sorted(p.parent for p in Path(multirun_dir).rglob("signature.json"))
    if not runs:
        raise ConfigError(
            f"{multirun_dir} holds no finished run (no */signature.json): pass the folder of a "
            "multirun, e.g. outputs/multiruns/<date_time>"
        )
    return runs


def _overrides(run_dir: Path) -> dict[str, str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    entries = yaml.safe_load(path.read_text()) if path.is_file() else []
    return dict(entry.split("=", 1) for entry in entries or [] if "=" in entry)


def group_runs(runs: Sequence[Path]) -> dict[str, list[Path]]:
    """Runs grouped by the overrides the sweep varied, seeds pooled: e.g. `model=gru`."""
    overrides = [_overrides(run) for run in runs]
    keys = sorted({key for o in overrides for key in o} - {SEED})
    varied = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    groups: dict[str, list[Path]] = {}
    for run, o in zip(runs, overrides, strict=True):
        label = ",".join(f"{k}={o.get(k)}" for k in varied) or "all"
        groups.setdefault(label, []).append(run)
    return groups


def interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval over seeds (NaN bounds for a single seed)."""
    data = np.asarray(values, dtype=np.float64)
    mean = float(data.mean())
    if len(data) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(data) - 1) * data.std(ddof=1) / math.sqrt(len(data))
    return mean, float(mean - half), float(mean + half)


def group_rows(
    groups: dict[str, list[Signature]], views: Sequence[str]
) -> list[tuple[str, str, int | None, str, int, float, float, float]]:
    """Rows of COLUMNS: per group, view and offset the accuracy and information over seeds,
    and per group and view the capacity."""
    rows = []
    for label, signatures in groups.items():
        offsets = signatures[0].offsets
        for view in views:
            scores = [s.views[view] for s in signatures]
            for metric in ("accuracy", "info_bits"):
                for i, k in enumerate(offsets):
                    values = [getattr(sc, metric)[i] for sc in scores]
                    rows.append((label, view, k, metric, len(values), *interval(values)))
            capacities = [sc.capacity for sc in scores]
            rows.append((label, view, None, "capacity", len(capacities), *interval(capacities)))
    return rows


def compare_sweep(
    multirun_dir: Path, out: Path | None, views: Sequence[str] | None, track: bool
) -> dict[str, Path]:
    """Gather, summarise, write compare.csv and compare.png, log them to W&B."""
    multirun_dir = Path(multirun_dir)
    groups = {
        label: [Signature.load(run) for run in runs]
        for label, runs in group_runs(find_runs(multirun_dir)).items()
    }
    every = [s for signatures in groups.values() for s in signatures]
    common = [v for v in every[0].views if all(v in s.views for s in every)]
    chosen = list(views) if views else common
    missing = [v for v in chosen if v not in common]
    if missing or not chosen:
        raise ConfigError(
            f"views {missing or chosen} are not in every run of {multirun_dir}; "
            f"views every run has: {common}"
        )
    if len({tuple(s.offsets) for s in every}) > 1:
        raise ConfigError(
            f"the runs of {multirun_dir} probe different offsets: compare runs "
            "with the same probe.offsets / probe.max_offset"
        )
    out = Path(out) if out else multirun_dir / "compare"
    out.mkdir(parents=True, exist_ok=True)
    rows = group_rows(groups, chosen)
    table = out / "compare.csv"
    write_csv_atomic(table, COLUMNS, rows)
    figure = save_figure(
        sweep_figure(rows, every[0].offsets, f"sweep {multirun_dir.name}"), out / "compare.png"
    )
    if track:
        _log_to_wandb(rows, figure, out, multirun_dir.name)
    return {"table": table, "figure": figure}


def _log_to_wandb(rows: list, figure: Path, out: Path, sweep: str) -> None:
    """The table and figure as one W&B run in the sweep's group."""
    import wandb

    from memsig.reports.tracking import log_report, wandb_logger

    logger = wandb_logger(project="memsig", save_dir=str(out), group=sweep, name="compare")
    scalars = {f"compare/{r[0]}/{r[1]}/capacity": r[5] for r in rows if r[3] == "capacity"}
    try:
        log_report([logger], "compare", scalars, COLUMNS, rows, figure)
    finally:
        wandb.finish()


def command(argv: Sequence[str]) -> None:
    """Parse `memsig compare MULTIRUN_DIR` arguments and write the comparison."""
    parser = argparse.ArgumentParser(
        prog="memsig compare",
        description="Compare the signatures of a multirun: mean and 95%% interval over seeds.",
    )
    parser.add_argument("multirun_dir", type=Path, help="a multirun folder (outputs/multiruns/X)")
    parser.add_argument("--out", type=Path, help="output folder (default MULTIRUN_DIR/compare)")
    parser.add_argument("--views", nargs="+", help="views to compare (default: all in common)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log to W&B")
    args = parser.parse_args(argv)
    paths = compare_sweep(args.multirun_dir, args.out, args.views, not args.no_wandb)
    for path in paths.values():
        print(path)
