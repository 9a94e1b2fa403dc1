"""One entry point for every probe kind (`probe=linear | mlp | ridge`) and every use (the
signature, the control task, the untrained baseline, each online-code block): build the probe,
fit it on the fit block (validation block for selection), test it, and say what it did."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import DictConfig

from memsig.extraction.loader import PositionBatches, position_loader, targets_of
from memsig.probes.moments import fit_moments
from memsig.probes.multi_offset import FusedProbe
from memsig.probes.prior_guard import PriorGuard
from memsig.probes.ridge import RidgeProbe
from memsig.runtime.faults import fault_point
from memsig.runtime.resume import ResumeCheckpoint, resume_point
from memsig.runtime.trainer import make_trainer

Probe = FusedProbe | RidgeProbe  # what every kind offers: views, logits(features), test_results
Sets = tuple[PositionBatches, PositionBatches, PositionBatches]  # fit, val, test


@dataclass(frozen=True)
class ProbeSetup:
    """What every probe of one signature shares: the config, the run dir (resume checkpoints),
    the heads' inputs (views and derived heads) and widths, the number of classes, the device,
    and per head input its one-hot indicator columns (none where absent)."""

    cfg: DictConfig
    run_dir: Path
    views: dict[str, int]
    num_classes: int
    device: torch.device
    indicators: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass
class FittedProbe:
    """A tested probe (`views`, `logits`, `test_results`), the gradient epochs it took, and
    kind-specific facts for signature.json's `probe` record."""

    probe: Probe
    epochs: int
    record: dict = field(default_factory=dict)

    @property
    def results(self) -> dict[str, torch.Tensor]:
        return self.probe.test_results


def fit_and_test(
    setup: ProbeSetup,
    sets: Sets,
    key: list,
    loggers: list | None = None,
    documents: np.ndarray | None = None,
) -> FittedProbe:
    """Fit the configured probe kind on sets = (fit, val, test) and score it on test; with
    `documents` (the document of every test row), the test scores are also summed per
    document. `key` names the run's resume checkpoints.

    The kind is the class that `probe.<kind>` names (see `build_probe`)."""
    probe = build_probe(setup, sets[0], sets[1])
    if isinstance(probe, FusedProbe):
        return _train(probe, setup, sets, key, loggers, documents)
    return _solve(probe.to(setup.device), sets, setup.cfg.probe.batch_size, documents)


def build_probe(setup: ProbeSetup, fit: PositionBatches, val: PositionBatches) -> Probe:
    """The configured probe kind, unfitted: the class `probe.<kind>` names (`_target_`, with
    the kind's own keys), whitened with the fit positions' moments, its prior guard from the
    fit and validation targets; the kinds trained by gradient descent (FusedProbe's) also take
    the trained kinds' keys. Seeded, so it is the same whether or not the base model was
    trained in this process."""
    cfg = setup.cfg
    build = instantiate(cfg.probe[cfg.probe.kind])  # the kind's class, its own keys bound
    mean, cov = fit_moments(fit, setup.views, cfg.probe.batch_size)
    guard = PriorGuard(len(setup.views), setup.num_classes, targets_of(fit), targets_of(val))
    shared = {
        "view_dims": setup.views,
        "num_offsets": len(fit.offsets),
        "num_classes": setup.num_classes,
        "mean": mean,
        "cov": cov,
        "guard": guard,
    }
    L.seed_everything(cfg.seed, verbose=False)
    if not issubclass(build.func, FusedProbe):
        return build(**shared)
    return build(
        **shared,
        optimizer=instantiate(cfg.probe.optimizer),
        strengths=list(cfg.probe.l2),
        min_delta=cfg.probe.min_delta,
        lr_decay=cfg.probe.lr_decay,
        indicators=setup.indicators,
    )


def _solve(probe: RidgeProbe, sets: Sets, batch: int, documents: np.ndarray | None) -> FittedProbe:
    """A closed-form kind: each rank sums its share of every pass, the sums are added over
    the ranks, and every rank solves the same system."""
    fit, val, test = sets
    probe.fit(
        position_loader(fit, batch, shuffle=False, shard=True),
        position_loader(val, batch, shuffle=False, shard=True),
    )
    if documents is not None:
        probe.keep_document_sums(documents)
    probe.test(position_loader(test, batch, shuffle=False, shard=True))
    record = {
        name: {v: getattr(probe, name)[i].tolist() for i, v in enumerate(probe.views)}
        for name in ("strength", "temperature")
    }
    return FittedProbe(probe, 0, {"ridge": record, **prior_record(probe)})


def _train(
    trained: FusedProbe,
    setup: ProbeSetup,
    sets: Sets,
    key: list,
    loggers: list | None,
    documents: np.ndarray | None,
) -> FittedProbe:
    """A kind trained by gradient descent: warm start, then epochs until no view x offset has
    beaten its best by min_delta for `patience` epochs (resumable), then the test pass."""
    cfg, (fit, val, test) = setup.cfg, sets
    batch = cfg.probe.batch_size
    stop = EarlyStopping(monitor="probe/val/improvements", mode="max", patience=cfg.probe.patience)
    inputs = {"key": key, "seed": cfg.seed}  # what the fit is made from
    digest = hashlib.sha256(json.dumps(key).encode() + b"%d" % cfg.seed).hexdigest()
    checkpoints = setup.run_dir / "checkpoints" / f"probe-{digest[:12]}"
    trainer = make_trainer(
        cfg,
        loggers or [],
        "probe",
        max_epochs=cfg.probe.max_epochs,
        callbacks=[stop, ResumeCheckpoint(checkpoints, "probe")],
        num_sanity_val_steps=0,
    )
    trained.warm_start(position_loader(fit, batch, shuffle=False, shard=False))
    trainer.fit(
        trained,
        position_loader(
            fit, batch, shuffle=True, shard=True, seed=cfg.seed, min_steps=cfg.probe.min_steps
        ),
        position_loader(val, batch, shuffle=False, shard=True),
        ckpt_path=resume_point(checkpoints, cfg.resume, inputs),
        weights_only=True,
    )
    fault_point("probe_fitted")
    if documents is not None:
        trained.keep_document_sums(documents)
    trainer.test(trained, position_loader(test, batch, shuffle=False, shard=True), verbose=False)
    record = {"l2": trained.chosen_strengths(), **prior_record(trained)}
    return FittedProbe(trained, trainer.current_epoch, record)


def prior_record(probe: Probe) -> dict:
    """Per view, the offsets (as booleans) where the prior replaced the head."""
    use = probe.guard.use_prior
    return {"prior_heads": {v: use[i].tolist() for i, v in enumerate(probe.views)}}
