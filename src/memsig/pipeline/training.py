"""The fit loop every trained base model shares (best checkpoint, early stopping, resume), and
the base checkpoint it publishes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from memsig.models.checkpoint import file_digest, save_base_checkpoint
from memsig.pipeline.plan import Plan
from memsig.reports.tracking import log_checkpoint
from memsig.runtime.distributed import barrier, is_rank_zero
from memsig.runtime.faults import fault_point
from memsig.runtime.resume import ResumeCheckpoint, resume_point
from memsig.runtime.trainer import make_trainer


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
