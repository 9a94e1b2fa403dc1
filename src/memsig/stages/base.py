"""Base stage: train (or count) the base model and save checkpoints/base.ckpt."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from memsig.data.streams import stream_loader
from memsig.distributed import barrier, is_rank_zero
from memsig.models.char_lm import CharLM
from memsig.models.checkpoint import build_network, file_digest, save_base_checkpoint
from memsig.models.ngram import bits_per_char
from memsig.plan import Plan
from memsig.resume import ResumeCheckpoint, resume_point
from memsig.stages.trainer import make_trainer
from memsig.tracking import log_checkpoint

log = logging.getLogger(__name__)


def train_base(cfg: DictConfig, plan: Plan, loggers: list) -> Path:
    """Train the base LM until validation bits per character stop improving; save base.ckpt."""
    if cfg.model.get("fit") == "counts":
        return fit_by_counting(cfg, plan, loggers)
    corpus, training = plan.corpus, cfg.model.training
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    net = build_network(model_cfg, len(corpus.vocab))
    lm = CharLM(
        net,
        instantiate(cfg.model.optimizer),
        list(corpus.vocab),
        corpus.unit,
        compile=cfg.get("compile", False),
    )
    checkpoints = plan.run_dir / "checkpoints" / "lightning"
    best = ModelCheckpoint(
        dirpath=checkpoints,
        filename="best",
        monitor="val/bpc",
        mode="min",
    )
    stop = EarlyStopping(
        monitor="val/bpc", mode="min", patience=training.patience, min_delta=training.min_delta
    )
    trainer = make_trainer(
        cfg,
        loggers,
        max_epochs=training.max_epochs,
        callbacks=[best, stop, ResumeCheckpoint(checkpoints)],
        gradient_clip_val=training.grad_clip,
    )
    trainer.fit(
        lm,
        stream_loader(corpus.parts["train"], training.batch_size, training.bptt),
        stream_loader(corpus.parts["val"], training.batch_size, training.bptt),
        ckpt_path=resume_point(checkpoints, cfg.resume),
        weights_only=True,
    )
    state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    lm.load_state_dict(state)
    metrics = {"val/bpc": float(best.best_model_score)}
    if is_rank_zero():
        save_base_checkpoint(
            plan.base_ckpt, lm.net, model_cfg, list(corpus.vocab), corpus.unit, metrics
        )
        log_checkpoint(loggers, plan.base_ckpt, file_digest(plan.base_ckpt), metrics)
    barrier()  # every rank reads base.ckpt next
    log.info("base model: val/bpc %.4f, saved %s", metrics["val/bpc"], plan.base_ckpt)
    return plan.base_ckpt


def fit_by_counting(cfg: DictConfig, plan: Plan, loggers: list) -> Path:
    """Fit a count model (`model.fit=counts`) in one pass over train, score val/bpc, save it."""
    corpus = plan.corpus
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    net = build_network(model_cfg, len(corpus.vocab))
    net.fit(corpus.parts["train"])
    metrics = {"val/bpc": bits_per_char(net, corpus.parts["val"])}
    for logger in loggers:
        logger.log_metrics(metrics)
    save_base_checkpoint(plan.base_ckpt, net, model_cfg, list(corpus.vocab), corpus.unit, metrics)
    log_checkpoint(loggers, plan.base_ckpt, file_digest(plan.base_ckpt), metrics)
    log.info("count model: val/bpc %.4f, saved %s", metrics["val/bpc"], plan.base_ckpt)
    return plan.base_ckpt
