"""Signature stage: extract states once, fit every view x offset probe together, score,
save and log the signature; the optional extras (control task, untrained baseline, online
code, bootstrap intervals) come from their own modules."""

from __future__ import annotations

import logging

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from memsig.bases import basis_divergence, write_basis_report
from memsig.chars import character_record, save_chars
from memsig.data.corpus import Corpus
from memsig.errors import ConfigError
from memsig.models.checkpoint import file_digest, load_base_checkpoint, restore_network
from memsig.models.factorized import with_basis_ablations
from memsig.plan import Plan, optional_list
from memsig.plots import save_figure, signature_figure
from memsig.probes.baselines import prior_baselines
from memsig.probes.factory import ProbeSetup, fit_and_test
from memsig.probes.loader import PositionBatches, targets_of
from memsig.probes.local_context import local_context_reference
from memsig.probes.multi_offset import probe_views
from memsig.probes.offsets import valid_positions
from memsig.reliability import summarise
from memsig.signature import Signature, view_scores
from memsig.stages.control_task import control_task
from memsig.stages.intervals import intervals_record, test_documents
from memsig.stages.online_code import online_code
from memsig.stages.untrained import untrained_signature
from memsig.state_cache import ExtractSettings, StateCache, probe_caches
from memsig.tracking import log_signature

log = logging.getLogger(__name__)


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
    caches = probe_caches(
        net.views, corpus.parts, plan.run_dir / "cache", identity, settings, device
    )
    sets = _position_sets(caches, corpus, offsets, cfg.probe.val_fraction)
    fit, val, test = sets
    num_classes = len(corpus.vocab)
    setup = ProbeSetup(cfg, plan.run_dir, views, num_classes, caches["probe_train"], device)
    documents = test_documents(cfg, test)
    probe_key = [identity, probe_cfg, offsets]
    fitted = fit_and_test(setup, sets, probe_key, loggers, documents)
    chars = character_record(
        fitted.probe, test, corpus.vocab, cfg.probe.passage_chars, cfg.probe.batch_size
    )
    save_chars(plan.run_dir, chars)

    baseline = prior_baselines(targets_of(fit), targets_of(test), num_classes)
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
        probe={
            "kind": cfg.probe.kind,
            "epochs": fitted.epochs,
            "config": probe_cfg,
            **fitted.record,
        },
        offsets=list(offsets),
        baseline=baseline,
        views=view_scores(views, offsets, fitted.results, baseline),
    )
    control = None
    if cfg.probe.control:
        signature.extra["control"], control = control_task(
            setup, sets, probe_key, documents, signature
        )
    if cfg.probe.untrained_baseline:
        signature.extra["untrained"] = untrained_signature(
            setup, plan, payload, identity, sets, signature
        )
    if cfg.probe.mdl:
        signature.extra["mdl"] = online_code(setup, (fit, val), probe_key)
    if documents is not None:
        signature.extra["intervals"] = intervals_record(
            cfg, signature, sets, documents, fitted.results, control and control.results
        )
    signature.extra["summary"] = summarise(signature)
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
