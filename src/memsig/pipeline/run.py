"""The stages run.py calls: train the base model, then compute and save its memory signature."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from memsig.config.compose import in_sweep
from memsig.config.tree import config_tree
from memsig.pipeline.base_stage import train_base
from memsig.pipeline.plan import prepare
from memsig.pipeline.signature_stage import signature_stage
from memsig.reports.tracking import build_loggers, finish_loggers
from memsig.runtime import progress
from memsig.runtime.atomic import write_text_atomic
from memsig.runtime.distributed import is_rank_zero, start_processes
from memsig.runtime.run_dir import check_writable
from memsig.runtime.run_lock import run_dir_lock
from memsig.runtime.threads import torch_threads
from memsig.signature.record import Signature

log = logging.getLogger("memsig")


def run(cfg: DictConfig) -> Signature | None:
    """Run the configured stages; returns the signature when one was computed. One run at a
    time holds the run dir (rank 0 takes its lock for every rank)."""
    run_dir = Path(cfg.paths.output_dir)
    check_writable(run_dir, "paths.output_dir")
    with run_dir_lock(run_dir) if is_rank_zero() else nullcontext():
        return _run_stages(cfg)


def _run_stages(cfg: DictConfig) -> Signature | None:
    plan = prepare(cfg)
    start_processes(cfg.trainer)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if is_rank_zero():
        write_text_atomic(plan.run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        _print_config(cfg, plan.run_dir / "config.yaml")
    debug = debug_settings(cfg.trainer)
    if debug:
        log.warning("debug run (%s): its numbers are not a measurement", debug)
    loggers = build_loggers(cfg.get("logger"), OmegaConf.to_container(cfg, resolve=True))
    status = "failed"
    threads = torch.get_num_threads()
    chosen, why = torch_threads(cfg.get("threads"), cfg.trainer)
    torch.set_num_threads(chosen)
    log.info("torch CPU threads: %d (%s)", chosen, why)
    progress.configure(cfg.progress_every)
    try:
        if plan.stage in ("all", "base") and not plan.reuse_ckpt:
            train_base(cfg, plan, loggers)
        signature = signature_stage(cfg, plan, loggers) if plan.stage != "base" else None
        if debug:
            log.warning("debug run (%s) finished: its numbers are not a measurement", debug)
        status = "success"
        return signature
    finally:
        finish_loggers(loggers, status)
        torch.set_num_threads(threads)  # the caller's setting, whatever this run asked for


# Lightning settings that cut fits short, and the value of each that does not
FULL_FIT = {
    "fast_dev_run": False,
    "limit_train_batches": 1.0,
    "limit_val_batches": 1.0,
    "limit_test_batches": 1.0,
    "overfit_batches": 0.0,
}


def debug_settings(trainer: DictConfig) -> str:
    """The trainer settings that cut fits short (`debug=fdr`, `debug=limit`, or set by hand),
    as `key=value` text; empty for a full run. An integer limit counts batches: 1 is one."""
    cut = [
        f"trainer.{key}={trainer[key]}"
        for key, full in FULL_FIT.items()
        if trainer.get(key) is not None
        and not (trainer[key] == full and type(trainer[key]) is type(full))
    ]
    return ", ".join(cut)


def _print_config(cfg: DictConfig, full: Path) -> None:
    """Log the config short at the start (`extras.print_config`; null: in single runs only)."""
    wanted = cfg.get("extras", {}).get("print_config")
    if wanted is False or (wanted is None and in_sweep()):
        return
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    shown = {g: c for g, c in choices.items() if c is not None and not g.startswith("hydra/")}
    config = OmegaConf.to_container(cfg, resolve=True)
    log.info("%s", config_tree(config, shown, str(full)))
