"""The Lightning Trainer both stages use, built from the `trainer` config group, and the fit
loop every trained base model shares (best checkpoint, early stopping, resume)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from memsig.distributed import barrier, is_rank_zero
from memsig.faults import fault_point
from memsig.models.checkpoint import file_digest, save_base_checkpoint
from memsig.plan import Plan
from memsig.progress import LogProgress, log_lines_instead_of_bar
from memsig.resume import ResumeCheckpoint, resume_point
from memsig.tracking import log_checkpoint


def make_trainer(cfg: DictConfig, loggers: list, stage: str, **overrides) -> L.Trainer:
    """Hardware and loop settings from `trainer`, stage-specific settings as overrides. The
    loaders split batches across DDP ranks themselves (memsig.distributed), so Lightning's
    distributed sampler stays off. When stdout is not a terminal, progress is reported as
    `stage: ...` log lines instead of a bar."""
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    settings.update(use_distributed_sampler=False, **overrides)
    if settings.get("enable_progress_bar", True) and log_lines_instead_of_bar():
        settings["enable_progress_bar"] = False
        settings["callbacks"] = [*settings.get("callbacks", []), LogProgress(stage)]
    return L.Trainer(logger=loggers or False, default_root_dir=cfg.paths.output_dir, **settings)


def quiet_trainer(max_epochs: int, **overrides) -> L.Trainer:
    """A Trainer without loggers, checkpoints, progress bars or sanity checks: for probes fitted
    from a script (benchmarks, tests) rather than through the pipeline."""
    settings = dict(
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**{**settings, **overrides})


def fit_best(
    cfg: DictConfig,
    plan: Plan,
    loggers: list,
    system: L.LightningModule,
    train: DataLoader,
    val: DataLoader,
    monitor: str,
    inputs: Mapping,
    callbacks: list | None = None,
) -> float:
    """Train until `monitor` (lower is better) stops improving by model.training.min_delta for
    model.training.patience epochs; load the best epoch's weights and return its score.
    `inputs` (what the fit is made from) guard its resume checkpoints against another run's;
    `callbacks` run alongside the loop's own (best and resume checkpoints, early stopping)."""
    training = cfg.model.training
    checkpoints = plan.run_dir / "checkpoints" / "lightning"
    stop = EarlyStopping(
        monitor=monitor, mode="min", patience=training.patience, min_delta=training.min_delta
    )
    saver = ResumeCheckpoint(checkpoints, "base", monitor)
    trainer = make_trainer(
        cfg,
        loggers,
        "base",
        max_epochs=training.max_epochs,
        callbacks=[stop, saver, *(callbacks or [])],
        gradient_clip_val=training.grad_clip,
    )
    start = resume_point(checkpoints, cfg.resume, inputs)
    trainer.fit(system, train, val, ckpt_path=start, weights_only=True)
    fault_point("base_fitted")
    system.load_state_dict(saver.best_weights())
    return float(saver.best_score)


def publish_checkpoint(
    plan: Plan,
    loggers: list,
    net: torch.nn.Module,
    model_cfg: Mapping,
    metrics: Mapping[str, float],
    target: int = -1,
) -> Path:
    """Rank 0 saves the base checkpoint of `net` (see save_base_checkpoint), recording the
    inputs it was made from, and logs it as the run's model artifact (the one the signature's
    lineage names); every rank waits until it is there to read."""
    if is_rank_zero():
        corpus = plan.corpus
        vocab = list(corpus.vocab)
        save_base_checkpoint(
            plan.base_ckpt, net, model_cfg, vocab, corpus.unit, metrics, target, plan.inputs
        )
        log_checkpoint(loggers, plan.base_ckpt, file_digest(plan.base_ckpt), metrics)
    barrier()
    return plan.base_ckpt
