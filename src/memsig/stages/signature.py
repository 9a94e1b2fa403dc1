"""Signature stage: extract states once, fit every view x offset probe together, score,
save and log the signature; the optional extras (control task, untrained baseline, online
code, bootstrap intervals) come from their own modules."""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig, OmegaConf

from memsig.bases import basis_divergence, write_basis_report
from memsig.chars import character_record, save_chars
from memsig.distributed import is_rank_zero
from memsig.layers import write_layer_report
from memsig.models.checkpoint import (
    checkpoint_target,
    file_digest,
    load_base_checkpoint,
    restore_network,
)
from memsig.models.factorized import with_basis_ablations
from memsig.plan import Plan, optional_list
from memsig.plots import save_figure, signature_figure
from memsig.probes.baselines import prior_baselines
from memsig.probes.conditional import Conditioning
from memsig.probes.factory import ProbeSetup, fit_and_test
from memsig.probes.loader import targets_of
from memsig.probes.local_context import local_context_reference
from memsig.probes.multi_offset import probe_views
from memsig.reliability import summarise
from memsig.signature import Signature, view_scores
from memsig.stages.control_task import control_task
from memsig.stages.intervals import intervals_record, test_documents
from memsig.stages.online_code import online_code
from memsig.stages.probe_parts import position_sets, probe_parts
from memsig.stages.untrained import untrained_signature
from memsig.state_cache import ExtractSettings
from memsig.tracking import log_signature, log_signature_artifact

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
    parts = probe_parts(net, corpus, identity, settings, offsets, plan.run_dir / "cache", device)
    num_classes = len(corpus.vocab)
    conditioning = Conditioning(cfg.probe.get("condition_on"), views, num_classes)
    sets = tuple(map(conditioning.batches, position_sets(parts, offsets, cfg.probe.val_fraction)))
    fit, val, test = sets
    moments = conditioning.moments(fit, parts["probe_train"].cache, cfg.probe.batch_size)
    setup = ProbeSetup(cfg, plan.run_dir, conditioning.probe_dims, num_classes, moments, device)
    documents = test_documents(cfg, test, parts["probe_test"].blocks)
    probe_key = [identity, probe_cfg, offsets]
    fitted = fit_and_test(setup, sets, probe_key, loggers, documents)
    chars = None
    if corpus.unit == "char":
        chars = character_record(
            fitted.probe, test, corpus.vocab, cfg.probe.passage_chars, cfg.probe.batch_size
        )

    baseline = prior_baselines(targets_of(fit), targets_of(test), num_classes)
    signature = Signature(
        model={
            "name": cfg.model.name,
            "params": sum(p.numel() for p in net.parameters()),
            "checkpoint": str(plan.base_ckpt),
            "checkpoint_sha256": checkpoint_id,
            "target": checkpoint_target(payload),
            "metrics": dict(payload["metrics"]),
        },
        data={
            "name": corpus.name,
            "unit": corpus.unit,
            "vocab": list(corpus.vocab),
            "probe_train_tokens": len(parts["probe_train"].tokens),
            "probe_test_tokens": len(parts["probe_test"].tokens),
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
            setup, plan, payload, identity, signature
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
            (fit.positions, val.positions, test.positions),
            offsets,
            list(cfg.probe.reference_orders),
            len(corpus.vocab),
            baseline["prior_entropy_bits"],
        )
    if conditioning.m is not None:
        signature.extra["conditional_memory"] = conditioning.record(
            fitted.probe.views, fitted.results, offsets, baseline
        )
    if is_rank_zero():
        files = [*signature.save(plan.run_dir)]
        if chars is not None:
            files.append(save_chars(plan.run_dir, chars))
        figure = save_figure(signature_figure(signature), plan.run_dir / "signature.png")
        log_signature(loggers, signature, figure)
        write_basis_report(signature, plan.run_dir, loggers)
        write_layer_report(signature, plan.run_dir, loggers)
        log_signature_artifact(
            loggers, signature, [*files, figure], plan.base_ckpt, not plan.reuse_ckpt
        )
        log.info("signature written to %s", plan.run_dir / "signature.json")
    return signature


def _extraction_device(cfg: DictConfig) -> torch.device:
    wants_gpu = cfg.trainer.get("accelerator") in ("gpu", "cuda", "auto")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")
