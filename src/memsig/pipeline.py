"""The stages run.py calls: train the base model, then compute and save its memory signature."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from memsig.atomic import write_text_atomic
from memsig.bases import basis_divergence, write_basis_report
from memsig.chars import character_record, save_chars
from memsig.config import build
from memsig.data.corpus import Corpus
from memsig.data.streams import stream_loader
from memsig.errors import ConfigError, MemsigError
from memsig.models.char_lm import CharLM
from memsig.models.checkpoint import (
    build_network,
    file_digest,
    load_base_checkpoint,
    restore_network,
    save_base_checkpoint,
)
from memsig.models.factorized import with_basis_ablations
from memsig.models.ngram import bits_per_char
from memsig.plots import save_figure, signature_figure
from memsig.probes.baselines import prior_baselines
from memsig.probes.loader import PositionBatches, position_loader, targets_of
from memsig.probes.local_context import check_orders, local_context_reference
from memsig.probes.multi_offset import MultiOffsetProbe, probe_views
from memsig.probes.offsets import resolve_offsets, valid_positions
from memsig.resume import ResumeCheckpoint, resume_point
from memsig.signature import Signature, ViewScores
from memsig.state_cache import ExtractSettings, StateCache, build_cache
from memsig.tracking import build_loggers, log_signature
from memsig.validate import check_config

log = logging.getLogger(__name__)
STAGES = ("all", "base", "signature")


@dataclass
class Plan:
    """Everything checked before any work starts."""

    run_dir: Path
    corpus: Corpus
    stage: str
    base_ckpt: Path
    reuse_ckpt: bool
    offsets: list[int]


def run(cfg: DictConfig) -> Signature | None:
    """Run the configured stages; returns the signature when one was computed."""
    plan = prepare(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    write_text_atomic(plan.run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    loggers = build_loggers(cfg.get("logger"), OmegaConf.to_container(cfg, resolve=True))
    try:
        if plan.stage in ("all", "base") and not plan.reuse_ckpt:
            train_base(cfg, plan, loggers)
        if plan.stage in ("all", "signature"):
            return signature_stage(cfg, plan, loggers)
        return None
    finally:
        for logger in loggers:
            logger.finalize("success")
        _finish_wandb(loggers)


def prepare(cfg: DictConfig) -> Plan:
    """Validate the config, the data and any checkpoint to reuse, before training anything."""
    if cfg.stage not in STAGES:
        raise ConfigError(f"stage={cfg.stage}: must be one of {', '.join(STAGES)}")
    check_config(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    offsets = resolve_offsets(
        OmegaConf.to_container(cfg.probe.offsets) if cfg.probe.offsets is not None else None,
        cfg.probe.max_offset,
    )
    corpus: Corpus = build(cfg.data)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if cfg.base_ckpt is not None:
        base_ckpt, reuse = Path(cfg.base_ckpt).expanduser().resolve(), True
        if cfg.stage == "base":
            raise ConfigError(
                "stage=base trains a new model: drop base_ckpt, or use stage=signature"
            )
        payload = load_base_checkpoint(base_ckpt)
    else:
        base_ckpt = run_dir / "checkpoints" / "base.ckpt"
        reuse = base_ckpt.is_file()
        if cfg.stage == "signature" and not reuse:
            raise ConfigError(
                f"stage=signature needs a trained model: set base_ckpt=PATH/checkpoints/base.ckpt "
                f"(none found in {run_dir})"
            )
        payload = load_base_checkpoint(base_ckpt) if reuse else None
        if payload is not None and payload["model"] != model_cfg:
            raise ConfigError(
                f"{run_dir} already holds a base model with another config; "
                "start a new run dir (hydra.run.dir=...) or delete its checkpoints/"
            )
    if payload is not None and list(payload["vocab"]) != list(corpus.vocab):
        raise ConfigError(
            f"the vocabulary of {base_ckpt} ({len(payload['vocab'])} symbols) differs from "
            f"data={corpus.name}'s ({len(corpus.vocab)} symbols): use the data the model was "
            "trained on, or train a new model (drop base_ckpt)"
        )
    net = (
        restore_network(payload)
        if payload is not None
        else build_network(model_cfg, len(corpus.vocab))
    )
    ablate = cfg.probe.get("ablate_bases", False)
    probe_views(with_basis_ablations(net, ablate).view_dims, _optional_list(cfg.probe.views))
    check_orders(cfg.probe.reference_orders, len(corpus.vocab))
    for part in ("probe_train", "probe_test"):
        if len(valid_positions(len(corpus.parts[part]), offsets)) < 2:
            raise ConfigError(
                f"offsets {min(offsets)}..{max(offsets)} leave no positions in the {part} part "
                f"({len(corpus.parts[part])} tokens): lower probe.max_offset or enlarge "
                f"data.split.{part}"
            )
    return Plan(run_dir, corpus, cfg.stage, base_ckpt, reuse, offsets)


def train_base(cfg: DictConfig, plan: Plan, loggers: list) -> Path:
    """Train the base LM until validation bits per character stop improving; save base.ckpt."""
    if cfg.model.get("fit") == "counts":
        return fit_by_counting(cfg, plan, loggers)
    corpus, training = plan.corpus, cfg.model.training
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    net = build_network(model_cfg, len(corpus.vocab))
    lm = CharLM(net, instantiate(cfg.model.optimizer), list(corpus.vocab), corpus.unit)
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
    trainer = _trainer(
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
    save_base_checkpoint(
        plan.base_ckpt, lm.net, model_cfg, list(corpus.vocab), corpus.unit, metrics
    )
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
    log.info("count model: val/bpc %.4f, saved %s", metrics["val/bpc"], plan.base_ckpt)
    return plan.base_ckpt


def signature_stage(cfg: DictConfig, plan: Plan, loggers: list) -> Signature:
    """Extract states once, train every view x offset probe together, score, save, log."""
    probe_cfg = OmegaConf.to_container(cfg.probe, resolve=True)
    checkpoint_id = file_digest(plan.base_ckpt)
    existing = plan.run_dir / "signature.json"
    if existing.is_file():
        previous = Signature.load(existing)
        if (
            previous.probe.get("config") == probe_cfg
            and previous.model.get("checkpoint_sha256") == checkpoint_id
        ):
            log.info("signature already complete in %s: skipping", plan.run_dir)
            return previous

    payload = load_base_checkpoint(plan.base_ckpt)
    net = with_basis_ablations(restore_network(payload), cfg.probe.get("ablate_bases", False))
    device = _extraction_device(cfg)
    net.to(device)
    views = probe_views(net.view_dims, _optional_list(cfg.probe.views))
    settings = ExtractSettings(**cfg.probe.extract)
    corpus, offsets = plan.corpus, plan.offsets
    identity = {
        "checkpoint_sha256": checkpoint_id,
        "data": corpus.fingerprint(),
        "views": views,
        "dtype": settings.dtype,
        "settings": vars(settings),
    }
    caches = {
        part: build_cache(
            net.views,
            corpus.parts[part],
            plan.run_dir / "cache" / part,
            {**identity, "part": part},
            settings,
            device,
        )
        for part in ("probe_train", "probe_test")
    }
    fit, val, test = _position_sets(caches, corpus, offsets, cfg.probe.val_fraction)
    L.seed_everything(
        cfg.seed, verbose=False
    )  # same probe init whether or not the base trained here
    probe = MultiOffsetProbe(
        views,
        len(offsets),
        len(corpus.vocab),
        instantiate(cfg.probe.optimizer),
        caches["probe_train"].mean,
        caches["probe_train"].cov,
    )
    stop = EarlyStopping(
        monitor="probe/val/best_xent_bits",
        mode="min",
        patience=cfg.probe.patience,
        min_delta=cfg.probe.min_delta,
    )
    probe_key = hashlib.sha256(json.dumps([identity, probe_cfg, offsets]).encode()).hexdigest()
    checkpoints = plan.run_dir / "checkpoints" / f"probe-{probe_key[:12]}"
    trainer = _trainer(
        cfg,
        loggers,
        max_epochs=cfg.probe.max_epochs,
        callbacks=[stop, ResumeCheckpoint(checkpoints)],
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    batch = cfg.probe.batch_size
    probe.warm_start(position_loader(fit, batch, shuffle=False))
    trainer.fit(
        probe,
        position_loader(fit, batch, shuffle=True, seed=cfg.seed),
        position_loader(val, batch, shuffle=False),
        ckpt_path=resume_point(checkpoints, cfg.resume),
        weights_only=True,
    )
    trainer.test(probe, position_loader(test, batch, shuffle=False), verbose=False)
    chars = character_record(probe, test, corpus.vocab, cfg.probe.passage_chars, batch)
    save_chars(plan.run_dir, chars)

    baseline = prior_baselines(targets_of(fit), targets_of(test), len(corpus.vocab))
    results = probe.test_results
    signature = Signature(
        model={
            "name": cfg.model.name,
            "params": sum(p.numel() for p in net.parameters()),
            "checkpoint": str(plan.base_ckpt),
            "checkpoint_sha256": checkpoint_id,
            "metrics": dict(payload["metrics"]),
        },
        data={
            "name": corpus.name,
            "unit": corpus.unit,
            "vocab": list(corpus.vocab),
            "probe_train_tokens": len(corpus.parts["probe_train"]),
            "probe_test_tokens": len(corpus.parts["probe_test"]),
            "source": dict(corpus.info),
        },
        probe={"kind": cfg.probe.kind, "epochs": trainer.current_epoch, "config": probe_cfg},
        offsets=list(offsets),
        baseline=baseline,
        views={
            v: ViewScores.from_scores(
                d,
                offsets,
                results["accuracy"][i].tolist(),
                results["xent_bits"][i].tolist(),
                baseline["prior_entropy_bits"],
            )
            for i, (v, d) in enumerate(views.items())
        },
    )
    signature.extra.update(basis_divergence(signature))
    if cfg.probe.reference_orders:
        signature.extra["local_context"] = local_context_reference(
            corpus.parts["probe_train"],
            corpus.parts["probe_test"],
            offsets,
            list(cfg.probe.reference_orders),
            len(corpus.vocab),
            baseline["prior_entropy_bits"],
        )
    signature.save(plan.run_dir)
    figure = save_figure(signature_figure(signature), plan.run_dir / "signature.png")
    log_signature(loggers, signature, figure)
    write_basis_report(signature, plan.run_dir, loggers)
    log.info("signature written to %s", plan.run_dir / "signature.json")
    return signature


def _position_sets(
    caches: dict[str, StateCache], corpus: Corpus, offsets: list[int], val_fraction: float
):
    """Probe fit / validation / test positions; validation is the tail block of probe-train,
    separated from the fit block by a gap as wide as the offset range (no shared targets)."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"probe.val_fraction={val_fraction}: must be in (0, 1), e.g. 0.1")
    offs = np.asarray(offsets, dtype=np.int64)
    train_positions = np.asarray(valid_positions(len(corpus.parts["probe_train"]), offsets))
    cut = int(len(train_positions) * (1 - val_fraction))
    gap = max(abs(k) for k in offsets) + 1
    fit_positions, val_positions = train_positions[: max(0, cut - gap)], train_positions[cut:]
    if len(fit_positions) < 2 or len(val_positions) < 2:
        raise ConfigError(
            "the probe-train part is too short to split into fit and validation blocks: "
            "enlarge data.split.probe_train or lower probe.max_offset"
        )
    test_positions = np.asarray(valid_positions(len(corpus.parts["probe_test"]), offsets))

    def batches(part: str, positions: np.ndarray) -> PositionBatches:
        return PositionBatches(caches[part].views, corpus.parts[part], positions, offs)

    return (
        batches("probe_train", fit_positions),
        batches("probe_train", val_positions),
        batches("probe_test", test_positions),
    )


def _trainer(cfg: DictConfig, loggers: list, **overrides) -> L.Trainer:
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    settings.update(overrides)
    return L.Trainer(logger=loggers or False, default_root_dir=cfg.paths.output_dir, **settings)


def _extraction_device(cfg: DictConfig) -> torch.device:
    wants_gpu = cfg.trainer.get("accelerator") in ("gpu", "cuda", "auto")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def _optional_list(value) -> list | None:
    return None if value is None else list(value)


def _finish_wandb(loggers: list) -> None:
    from lightning.pytorch.loggers import WandbLogger

    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()


__all__ = ["run", "prepare", "train_base", "signature_stage", "MemsigError"]
