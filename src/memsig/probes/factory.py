"""One entry point for every probe kind (`probe=linear | mlp | ridge`): build it, fit it on the
fit block (validation block for selection), test it, and say what it did."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import DictConfig

from memsig.probes.loader import PositionBatches, position_loader
from memsig.probes.mlp import MLPProbe
from memsig.probes.multi_offset import FusedProbe, MultiOffsetProbe
from memsig.probes.ridge import RidgeProbe
from memsig.resume import ResumeCheckpoint, resume_point
from memsig.stages.trainer import make_trainer
from memsig.state_cache import StateCache

Probe = FusedProbe | RidgeProbe  # what every kind offers: views, logits(features), test_results


@dataclass
class FittedProbe:
    """A tested probe (`views`, `logits`, `test_results`), the gradient epochs it took, and
    kind-specific facts for signature.json's `probe` record."""

    probe: Probe
    epochs: int
    record: dict = field(default_factory=dict)


def fit_and_test(
    cfg: DictConfig,
    loggers: list,
    views: dict[str, int],
    train_cache: StateCache,
    sets: tuple[PositionBatches, PositionBatches, PositionBatches],
    num_classes: int,
    checkpoints: Path,
    device: torch.device,
) -> FittedProbe:
    """Fit the configured probe kind on sets = (fit, val, test) and score it on test."""
    fit, val, test = sets
    num_offsets, batch = len(fit.offsets), cfg.probe.batch_size
    # the same probe whether or not the base model was trained in this process
    L.seed_everything(cfg.seed, verbose=False)
    if cfg.probe.kind == "ridge":
        probe = RidgeProbe(
            views,
            num_offsets,
            num_classes,
            train_cache.mean,
            train_cache.cov,
            list(cfg.probe.ridge.strengths),
        ).to(device)
        probe.fit(
            position_loader(fit, batch, shuffle=False), position_loader(val, batch, shuffle=False)
        )
        probe.test(position_loader(test, batch, shuffle=False))
        record = {
            name: {v: getattr(probe, name)[i].tolist() for i, v in enumerate(probe.views)}
            for name in ("strength", "temperature")
        }
        return FittedProbe(probe, 0, {"ridge": record})

    args = (views, num_offsets, num_classes, instantiate(cfg.probe.optimizer))
    moments = (train_cache.mean, train_cache.cov)
    if cfg.probe.kind == "mlp":
        trained: FusedProbe = MLPProbe(*args, *moments, hidden=cfg.probe.mlp.hidden)
    else:
        trained = MultiOffsetProbe(*args, *moments)
    stop = EarlyStopping(
        monitor="probe/val/best_xent_bits",
        mode="min",
        patience=cfg.probe.patience,
        min_delta=cfg.probe.min_delta,
    )
    trainer = make_trainer(
        cfg,
        loggers,
        max_epochs=cfg.probe.max_epochs,
        callbacks=[stop, ResumeCheckpoint(checkpoints)],
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trained.warm_start(position_loader(fit, batch, shuffle=False))
    trainer.fit(
        trained,
        position_loader(fit, batch, shuffle=True, seed=cfg.seed),
        position_loader(val, batch, shuffle=False),
        ckpt_path=resume_point(checkpoints, cfg.resume),
        weights_only=True,
    )
    trainer.test(trained, position_loader(test, batch, shuffle=False), verbose=False)
    return FittedProbe(trained, trainer.current_epoch)
