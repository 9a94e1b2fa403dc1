"""`memsig audit RUN_DIR`: check a finished run's signature against an independent probe.

For every view and offset of RUN_DIR/signature.json, scikit-learn's LogisticRegression (C
chosen on the validation block, see memsig.probes.reference) is refitted on a random subsample
of the run's cached probe-fit states and scored on all of its probe-test states: the same
positions, split and targets as the run (the run's own code builds them from its config and
caches). The command prints the gaps (memsig minus reference, accuracy and cross-entropy bits)
and exits 1 when any exceeds its threshold, either way: a signature worse than a plain
logistic regression has fitting problems, one better than it on the same data is suspect.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from threadpoolctl import threadpool_limits

from memsig.config.compose import build
from memsig.data.vocabulary import recode
from memsig.extraction.loader import PositionBatches, targets_of
from memsig.extraction.probe_parts import cached_probe_parts, position_sets
from memsig.models.external import is_external
from memsig.probes.reference import C_GRID, ReferenceScore, score_reference
from memsig.runtime.errors import MemsigError
from memsig.signature.record import Signature

FIT_ROWS = 16000  # probe-fit (and at most as many validation) positions the reference sees
MAX_ACCURACY_GAP = 0.02
MAX_XENT_GAP_BITS = 0.05


@dataclass(frozen=True)
class AuditRow:
    """One view x offset: the signature's scores and the reference's."""

    view: str
    offset: int
    accuracy: float
    xent_bits: float
    reference: ReferenceScore

    @property
    def accuracy_gap(self) -> float:
        return self.accuracy - self.reference.accuracy

    @property
    def xent_gap(self) -> float:
        return self.xent_bits - self.reference.xent_bits

    def passed(self, max_accuracy_gap: float, max_xent_gap: float) -> bool:
        return abs(self.accuracy_gap) <= max_accuracy_gap and abs(self.xent_gap) <= max_xent_gap


def audit_run(
    run_dir: Path,
    fit_rows: int = FIT_ROWS,
    seed: int = 0,
    grid: Sequence[float] = C_GRID,
    threads: int | None = 1,
) -> list[AuditRow]:
    """The reference's scores next to the signature's, for every view x offset of a run.

    `threads` caps the BLAS threads of the fits (None: the library's default); for matrices
    this small one thread is fastest, and many threads on a busy machine are far slower."""
    with threadpool_limits(threads):
        return _audit_rows(Path(run_dir), fit_rows, seed, grid)


def _audit_rows(run_dir: Path, fit_rows: int, seed: int, grid: Sequence[float]) -> list[AuditRow]:
    signature = Signature.load(run_dir)
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise MemsigError(f"no config.yaml in {run_dir}: not a memsig run dir")
    cfg = OmegaConf.load(config)  # the run's config, resolved when it ran
    corpus = build(cfg.data)
    if is_external(cfg.model):  # probed as numbered by the model's vocabulary
        corpus = recode(corpus, signature.data["vocab"], cfg.model.get("unknown"))
    offsets = list(signature.offsets)
    parts = cached_probe_parts(
        corpus, run_dir / "cache", offsets, signature.model.get("checkpoint_sha256")
    )
    fit, val, test = position_sets(parts, offsets, cfg.probe.val_fraction)
    rng = np.random.default_rng(seed)
    sets = (_subsample(fit, fit_rows, rng), _subsample(val, fit_rows, rng), test)
    targets = [targets_of(s) for s in sets]
    num_classes = len(signature.data["vocab"])
    rows = []
    for view, scores in signature.views.items():
        if view not in test.views:
            raise MemsigError(f"the state cache of {run_dir} has no view {view!r}")
        states = [np.asarray(s.views[view][s.positions], dtype=np.float64) for s in sets]
        start = None  # each offset's C search starts at the previous offset's choice
        for j, k in enumerate(offsets):
            columns = [t[:, j] for t in targets]
            reference = score_reference(states, columns, num_classes, grid, start)
            start = reference.c if np.isfinite(reference.c) else start
            rows.append(AuditRow(view, k, scores.accuracy[j], scores.xent_bits[j], reference))
    return rows


def _subsample(batches: PositionBatches, rows: int, rng: np.random.Generator) -> PositionBatches:
    """At most `rows` of the positions, drawn at random, kept in stream order."""
    if len(batches.positions) <= rows:
        return batches
    chosen = rng.choice(len(batches.positions), rows, replace=False)
    return batches.replaced(positions=batches.positions[np.sort(chosen)])


def format_table(rows: list[AuditRow], max_accuracy_gap: float, max_xent_gap: float) -> str:
    """One line per view x offset: accuracy and cross-entropy, memsig vs reference, gaps."""
    lines = [
        f"{'view':<18}{'k':>4}  {'acc':>6} {'ref':>6} {'gap':>7}  "
        f"{'xent':>6} {'ref':>6} {'gap':>7}  {'C':>7}",
    ]
    for r in rows:
        verdict = "ok" if r.passed(max_accuracy_gap, max_xent_gap) else "FAIL"
        note = "" if r.reference.converged else " (reference not converged)"
        lines.append(
            f"{r.view:<18}{r.offset:>4}  {r.accuracy:6.3f} {r.reference.accuracy:6.3f} "
            f"{r.accuracy_gap:+7.3f}  {r.xent_bits:6.3f} {r.reference.xent_bits:6.3f} "
            f"{r.xent_gap:+7.3f}  {r.reference.c:7.0e}  {verdict}{note}"
        )
    return "\n".join(lines)


def command(argv: Sequence[str]) -> None:
    """Audit a run: print the table; exit 1 when any gap exceeds its threshold."""
    parser = argparse.ArgumentParser(
        prog="memsig audit",
        description="Refit every view x offset of a run with scikit-learn's LogisticRegression "
        "on its cached states and compare with its signature.json.",
    )
    parser.add_argument("run_dir", type=Path, help="a finished run dir (signature.json, cache/)")
    parser.add_argument(
        "--fit-rows",
        type=int,
        default=FIT_ROWS,
        help=f"probe-fit positions drawn for the reference (default {FIT_ROWS})",
    )
    parser.add_argument(
        "--max-accuracy-gap",
        type=float,
        default=MAX_ACCURACY_GAP,
        help=f"largest |accuracy gap| that passes (default {MAX_ACCURACY_GAP})",
    )
    parser.add_argument(
        "--max-xent-gap",
        type=float,
        default=MAX_XENT_GAP_BITS,
        help=f"largest |cross-entropy gap| in bits that passes (default {MAX_XENT_GAP_BITS})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsample (default 0)")
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS threads of the fits (default 1)"
    )
    args = parser.parse_args(argv)
    if args.fit_rows < 2:
        raise MemsigError(f"--fit-rows={args.fit_rows}: the reference needs at least 2 rows")
    started = time.perf_counter()
    rows = audit_run(args.run_dir, args.fit_rows, args.seed, threads=args.threads)
    print(format_table(rows, args.max_accuracy_gap, args.max_xent_gap))
    failed = sum(not r.passed(args.max_accuracy_gap, args.max_xent_gap) for r in rows)
    took = time.perf_counter() - started
    if failed:
        print(f"memsig audit: {failed} of {len(rows)} view x offset gaps too large ({took:.1f} s)")
        raise SystemExit(1)
    print(f"memsig audit: all {len(rows)} view x offset gaps within bounds ({took:.1f} s)")
