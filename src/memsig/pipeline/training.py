"""The fit loop every trained base model shares (best checkpoint, early stopping, resume), and
the base checkpoint it publishes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from memsig.config.compose import build
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
    callbacks: list | None = None,
) -> float:
    """Train with the `callbacks` group's callbacks (by default, early stopping once `monitor`,
    lower is better, stops improving); load the best epoch's weights and return its score.
    The plan's base inputs (what the fit is made from) guard its resume checkpoints against
    another run's;
    `callbacks` run alongside the configured ones and the loop's best and resume checkpoints."""
    training = cfg.model.training
    checkpoints = plan.run_dir / "checkpoints" / "lightning"
    saver = ResumeCheckpoint(checkpoints, "base", monitor)
    trainer = make_trainer(
        cfg,
        loggers,
        "base",
        max_epochs=training.max_epochs,
        callbacks=[*configured_callbacks(cfg, monitor), saver, *(callbacks or [])],
        gradient_clip_val=training.grad_clip,
    )
    start = resume_point(checkpoints, cfg.resume, plan.inputs)
    trainer.fit(system, train, val, ckpt_path=start, weights_only=True)
    fault_point("base_fitted")
    system.load_state_dict(saver.best_weights())
    return float(saver.best_score)


def configured_callbacks(cfg: DictConfig, monitor: str) -> list[Callback]:
    """The `callbacks` group's callbacks, in config order. One whose `monitor` is null watches
    `monitor`, the score this fit selects its best epoch on (it differs between models)."""
    built = []
    for node in (cfg.get("callbacks") or {}).values():
        watches = isinstance(node, DictConfig) and "monitor" in node and node.monitor is None
        built.append(build(node, **({"monitor": monitor} if watches else {})))
    return built


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
