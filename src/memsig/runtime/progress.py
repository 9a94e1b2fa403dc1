"""Progress as plain log lines, at most one every `progress_every` seconds.

A progress bar redraws one line with carriage returns: a log that is a file (a SLURM job's
output, `nohup`, CI) shows nothing of it until the end, or one frame per redraw. When stdout is
not a terminal, training reports through :class:`LogProgress` instead (stage, epoch, step,
the bar's metrics, rate, ETA); extraction loops report through :class:`LoopProgress` whatever
stdout is (they have no bar). Lines go to the `memsig` logger, so Hydra writes them both to
the console and to the run's log file."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Mapping

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger("memsig.runtime.progress")
DEFAULT_EVERY_S = 30.0
_every_s = DEFAULT_EVERY_S


def configure(every_s: float) -> None:
    """Seconds between two progress lines, for every reporter created afterwards (a run sets
    it from its `progress_every`)."""
    global _every_s
    _every_s = float(every_s)


def log_lines_instead_of_bar() -> bool:
    """True when stdout is not a terminal: a bar would only show its last frame there."""
    return not sys.stdout.isatty()


def clock_text(seconds: float) -> str:
    """h:mm:ss, or `?` when the rate is not known yet."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class Ticker:
    """Says when the next line is due (`every_s` after the previous one) and how fast the work
    goes since it started."""

    def __init__(self, every_s: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.every_s = _every_s if every_s is None else every_s
        self.clock = clock
        self.start = self.last = clock()

    def due(self) -> bool:
        now = self.clock()
        if now - self.last < self.every_s:
            return False
        self.last = now
        return True

    def rate(self, done: float) -> float:
        """Units of work per second since the start."""
        elapsed = self.clock() - self.start
        return done / elapsed if elapsed > 0 else math.nan


class LoopProgress:
    """`what: done/total unit (percent), rate, ETA` for a loop over a known amount of work."""

    def __init__(
        self,
        what: str,
        total: int,
        unit: str,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.ticker = Ticker(every_s, clock)

    def update(self, done: int) -> None:
        if not self.ticker.due():
            return
        rate = self.ticker.rate(done)
        eta = (self.total - done) / rate if rate > 0 else math.nan
        log.info(
            "%s: %d/%d %s (%.0f%%), %.1f %s/s, ETA %s",
            self.what,
            done,
            self.total,
            self.unit,
            100 * done / max(self.total, 1),
            rate,
            self.unit,
            clock_text(eta),
        )


def metrics_text(metrics: Mapping) -> str:
    """The progress bar's metrics as `name=value` pairs."""
    return " ".join(f"{name}={float(value):.4g}" for name, value in metrics.items())


class LogProgress(Callback):
    """Training progress as log lines: `stage: epoch e/E, step s/S, metrics, rate, ETA` (ETA of
    this epoch, and of all epochs up to max_epochs: early stopping may end sooner)."""

    def __init__(
        self, stage: str, every_s: float | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.stage, self.every_s, self.clock = stage, every_s, clock

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.ticker = Ticker(self.every_s, self.clock)
        self.first_step = trainer.global_step  # a resumed fit starts past step 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.is_global_zero or not self.ticker.due():
            return
        per_epoch = trainer.num_training_batches  # inf for a loader without a length
        rate = self.ticker.rate(trainer.global_step - self.first_step)
        left_in_epoch = per_epoch - (batch_idx + 1)
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else math.inf
        left_in_fit = left_in_epoch + per_epoch * (epochs - trainer.current_epoch - 1)
        log.info(
            "%s: epoch %d/%s, step %d/%s, %s, %.1f steps/s, ETA %s (epoch), <= %s (max_epochs)",
            self.stage,
            trainer.current_epoch + 1,
            epochs if epochs != math.inf else "?",
            batch_idx + 1,
            per_epoch if per_epoch != math.inf else "?",
            metrics_text(trainer.progress_bar_metrics) or "no metric yet",
            rate,
            clock_text(left_in_epoch / rate if rate > 0 else math.nan),
            clock_text(left_in_fit / rate if rate > 0 else math.nan),
        )
