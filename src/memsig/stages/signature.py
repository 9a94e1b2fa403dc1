"""Signature stage: extract states once, train every view x offset probe together, score,
save and log the signature."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import DictConfig, OmegaConf

from memsig.bases import basis_divergence, write_basis_report
from memsig.chars import character_record, save_chars
from memsig.data.corpus import Corpus
from memsig.distributed import is_rank_zero, rank_zero_first
from memsig.errors import ConfigError
from memsig.models.checkpoint import file_digest, load_base_checkpoint, restore_network
from memsig.models.factorized import with_basis_ablations
from memsig.plan import Plan, optional_list
from memsig.plots import save_figure, signature_figure
from memsig.probes.baselines import prior_baselines
from memsig.probes.loader import PositionBatches, position_loader, targets_of
from memsig.probes.local_context import local_context_reference
from memsig.probes.multi_offset import MultiOffsetProbe, probe_views
from memsig.probes.offsets import valid_positions
from memsig.resume import ResumeCheckpoint, resume_point
from memsig.signature import Signature, ViewScores
from memsig.stages.trainer import make_trainer
from memsig.state_cache import ExtractSettings, StateCache, build_cache, open_cache
from memsig.tracking import log_signature, log_signature_artifact

log = logging.getLogger(__name__)
CACHE_WAIT_S = 6 * 3600  # how long other ranks wait for rank 0 to extract the states


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
    views = probe_views(net.view_dims, optional_list(cfg.probe.views))
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
        part: _shared_cache(
            net, corpus.parts[part], plan.run_dir / "cache" / part, identity, settings, device
        )
        for part in ("probe_train", "probe_test")
    }
    fit, val, test = _position_sets(caches, corpus, offsets, cfg.probe.val_fraction)
    # the same probe whether or not the base model was trained in this process
    L.seed_everything(cfg.seed, verbose=False)
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
    trainer = make_trainer(
        cfg,
        loggers,
        max_epochs=cfg.probe.max_epochs,
        callbacks=[stop, ResumeCheckpoint(checkpoints)],
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    batch = cfg.probe.batch_size
    probe.warm_start(position_loader(fit, batch, shuffle=False, shard=False))
    trainer.fit(
        probe,
        position_loader(fit, batch, shuffle=True, seed=cfg.seed),
        position_loader(val, batch, shuffle=False),
        ckpt_path=resume_point(checkpoints, cfg.resume),
        weights_only=True,
    )
    trainer.test(probe, position_loader(test, batch, shuffle=False), verbose=False)
    chars = character_record(probe, test, corpus.vocab, cfg.probe.passage_chars, batch)

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
    if is_rank_zero():
        chars_file = save_chars(plan.run_dir, chars)
        files = signature.save(plan.run_dir)
        figure = save_figure(signature_figure(signature), plan.run_dir / "signature.png")
        log_signature(loggers, signature, figure)
        write_basis_report(signature, plan.run_dir, loggers)
        log_signature_artifact(
            loggers, signature, [*files, figure, chars_file], plan.base_ckpt, not plan.reuse_ckpt
        )
        log.info("signature written to %s", plan.run_dir / "signature.json")
    return signature


def _shared_cache(
    net,
    tokens: np.ndarray,
    directory: Path,
    identity: dict,
    settings: ExtractSettings,
    device: torch.device,
) -> StateCache:
    """The state cache of one part, extracted once by rank 0 and opened by every rank."""
    identity = {**identity, "part": directory.name}
    return rank_zero_first(
        lambda: build_cache(net.views, tokens, directory, identity, settings, device),
        lambda: open_cache(directory, identity),
        timeout=CACHE_WAIT_S,
        what=f"the state cache {directory}",
    )


def _position_sets(
    caches: dict[str, StateCache], corpus: Corpus, offsets: list[int], val_fraction: float
):
    """Probe fit / validation / test positions; validation is the tail block of probe-train,
    separated from the fit block by a gap as wide as the offset range (no shared targets)."""
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


def _extraction_device(cfg: DictConfig) -> torch.device:
    wants_gpu = cfg.trainer.get("accelerator") in ("gpu", "cuda", "auto")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")
