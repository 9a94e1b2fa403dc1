"""Base stage: train (or count) the base model and save checkpoints/base.ckpt."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from memsig.data.streams import stream_loader
from memsig.extraction.state_cache import ExtractSettings
from memsig.models.char_lm import CharLM
from memsig.models.checkpoint import build_network, initial_network
from memsig.models.ngram import bits_per_char
from memsig.pipeline.ctc_stage import train_ctc
from memsig.pipeline.plan import Plan, optional_list
from memsig.pipeline.training import fit_best, publish_checkpoint
from memsig.pipeline.training_signature import SignatureDuringTraining

log = logging.getLogger(__name__)


def train_base(cfg: DictConfig, plan: Plan, loggers: list) -> Path:
    """Train the base LM until validation bits per character stop improving; save base.ckpt."""
    if cfg.model.get("fit") == "counts":
        return fit_by_counting(cfg, plan, loggers)
    if cfg.model.get("task") == "ctc":
        return train_ctc(cfg, plan, loggers)
    corpus, training = plan.corpus, cfg.model.training
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    net = initial_network(model_cfg, len(corpus.vocab), cfg.seed)
    lm = CharLM(
        net, instantiate(cfg.model.optimizer), corpus.target, compile=cfg.get("compile", False)
    )
    # rows split across DDP ranks; val/bpc is a metric summed over them
    rows, bptt, target = training.batch_size, training.bptt, corpus.target
    train = stream_loader(corpus.parts["train"], rows, bptt, target, shard=True)
    val = stream_loader(corpus.parts["val"], rows, bptt, target, shard=True)
    callbacks = _signatures_during_training(cfg, plan, loggers)
    score = fit_best(cfg, plan, loggers, lm, train, val, "val/bpc", callbacks)
    metrics = {"val/bpc": score}
    publish_checkpoint(plan, loggers, lm.net, model_cfg, metrics, lm.target)
    log.info("base model: val/bpc %.4f, saved %s", metrics["val/bpc"], plan.base_ckpt)
    return plan.base_ckpt


def _signatures_during_training(cfg: DictConfig, plan: Plan, loggers: list) -> list:
    """The callback that computes small signatures while the model trains, when asked."""
    during = cfg.probe.get("during_training")
    if during is None or not during.every_n_steps:
        return []
    return [
        SignatureDuringTraining(
            plan.corpus,
            plan.offsets,
            optional_list(cfg.probe.views),
            during.every_n_steps,
            during.chars,
            plan.run_dir,
            loggers,
            ExtractSettings(**cfg.probe.extract),
            cfg.probe.batch_size,
        )
    ]


def fit_by_counting(cfg: DictConfig, plan: Plan, loggers: list) -> Path:
    """Fit a count model (`model.fit=counts`) in one pass over train, score val/bpc, save it."""
    corpus = plan.corpus
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    net = build_network(model_cfg, len(corpus.vocab))
    net.fit(corpus.parts["train"])
    metrics = {"val/bpc": bits_per_char(net, corpus.parts["val"])}
    for logger in loggers:
        logger.log_metrics(metrics)
    publish_checkpoint(plan, loggers, net, model_cfg, metrics)
    log.info("count model: val/bpc %.4f, saved %s", metrics["val/bpc"], plan.base_ckpt)
    return plan.base_ckpt
