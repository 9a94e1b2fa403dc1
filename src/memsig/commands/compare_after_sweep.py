"""After a multirun: compare two of its jobs character by character (`memsig compare`), so an
experiment such as `ngram_vs_rnn` ends with its comparison in the sweep dir and in tracking."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from memsig.commands.compare import class_rows, compare_chars, load_pair
from memsig.reports.tracking import build_loggers, finish_loggers, log_report
from memsig.runtime.errors import MemsigError
from memsig.signature.record import Signature

log = logging.getLogger(__name__)
OUT_DIR = "compare_chars"  # sub-folder of the sweep dir that receives the comparison


def finished_jobs(sweep_dir: Path) -> dict[str, Path]:
    """Model name -> run dir of every job in the sweep that wrote a signature (first wins)."""
    jobs: dict[str, Path] = {}
    for run_dir in sorted(p for p in Path(sweep_dir).iterdir() if (p / "signature.json").is_file()):
        jobs.setdefault(Signature.load(run_dir).model["name"], run_dir)
    return jobs


class CompareCharsAfterSweep(Callback):
    """Hydra callback: once every job of a multirun has finished, compare the job of model
    `first` with the job of model `second` (files in <sweep dir>/compare_chars, figure and
    table to the configured loggers). A job that failed leaves a clear log line, not a crash."""

    def __init__(self, first: str, second: str) -> None:
        self.first, self.second = first, second

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = finished_jobs(sweep_dir)
        missing = [m for m in (self.first, self.second) if m not in jobs]
        if missing:
            log.error(
                "no character comparison: the sweep in %s has no finished job of model %s "
                "(finished: %s); rerun those jobs, then `memsig compare RUN_A RUN_B`",
                sweep_dir,
                missing,
                sorted(jobs),
            )
            return
        out = sweep_dir / OUT_DIR
        try:
            paths = compare_chars(jobs[self.first], jobs[self.second], out)
        except MemsigError as err:
            log.error("no character comparison of the sweep in %s: %s", sweep_dir, err)
            return
        log.info("character comparison written to %s", out)
        self._track(config, out, jobs[self.first], jobs[self.second], paths["png"])

    @staticmethod
    def _track(config: DictConfig, out: Path, run_a: Path, run_b: Path, figure: Path) -> None:
        """The class table and the figure to the sweep's loggers, saved under `out`."""
        logger_cfg = OmegaConf.to_container(config.get("logger") or {}, resolve=False)
        for entry in logger_cfg.values():
            if isinstance(entry, dict) and "save_dir" in entry:
                entry["save_dir"] = str(out)
            if isinstance(entry, dict) and "group" in entry:  # W&B: beside the sweep's jobs
                entry.update(group=out.parent.name, name=OUT_DIR)
        loggers = build_loggers(OmegaConf.create(logger_cfg), {"compare": [str(run_a), str(run_b)]})
        status = "failed"
        try:
            a, b, record = load_pair(run_a, run_b)
            columns = ["run", "view", "class", "offset", "accuracy", "count"]
            log_report(loggers, "compare_chars", {}, columns, class_rows(a, b, record), figure)
            status = "success"
        finally:
            finish_loggers(loggers, status)
