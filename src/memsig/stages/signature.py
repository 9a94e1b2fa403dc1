"""Signature stage: extract states once, fit every view x offset probe together, score,
save and log the signature; the optional extras (control task, untrained baseline, online
code, bootstrap intervals) come from their own modules."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from memsig.bases import basis_divergence, write_basis_report
from memsig.chars import character_record, save_chars
from memsig.distributed import is_rank_zero
from memsig.faults import fault_point
from memsig.health import health_record, health_warning
from memsig.identity import differences
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
from memsig.probes.multi_offset import indicator_columns, probe_views
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
    corpus, offsets = plan.corpus, plan.offsets
    inputs = {
        "checkpoint_sha256": checkpoint_id,
        "data_sha256": corpus.fingerprint(),
        "seed": cfg.seed,
        "probe": probe_cfg,
    }
    previous = _complete_signature(plan.run_dir, inputs)
    if previous is not None:
        return previous

    payload = load_base_checkpoint(plan.base_ckpt)
    net = with_basis_ablations(restore_network(payload), cfg.probe.get("ablate_bases", False))
    device = _extraction_device(cfg)
    net.to(device)
    views = probe_views(net.view_dims, optional_list(cfg.probe.views))
    settings = ExtractSettings(**cfg.probe.extract)
    identity = {
        "checkpoint_sha256": checkpoint_id,
        "data": inputs["data_sha256"],
        "views": views,
        "dtype": settings.dtype,
        "settings": vars(settings),
    }
    parts = probe_parts(net, corpus, identity, settings, offsets, plan.run_dir / "cache", device)
    num_classes = len(corpus.vocab)
    conditioning = Conditioning(cfg.probe.get("condition_on"), views, num_classes)
    sets = tuple(map(conditioning.batches, position_sets(parts, offsets, cfg.probe.val_fraction)))
    fit, val, test = sets
    # the derived heads of probe.condition_on are not marked: they keep the plain whitening
    indicators = indicator_columns(net, views)
    setup = ProbeSetup(cfg, plan.run_dir, conditioning.probe_dims, num_classes, device, indicators)
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
            "name": payload["model"]["name"],
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
            # test positions scored (summed over DDP ranks): every probe-test position once
            "probe_test_positions": int(fitted.results["count"]),
            "source": dict(corpus.info),
            "sha256": inputs["data_sha256"],
        },
        probe={
            "kind": cfg.probe.kind,
            "epochs": fitted.epochs,
            "seed": cfg.seed,
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
    signature.extra["health"] = health_record(signature, len(fit), num_classes)
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
        _save_outputs(signature, chars, plan, loggers)
        warning = health_warning(signature.extra["health"])
        if warning:
            log.warning(warning)
    return signature


def _save_outputs(signature: Signature, chars: dict | None, plan: Plan, loggers: list) -> None:
    """Every side file first, then signature.json, which lists them: its presence marks the
    stage complete, and a rerun redoes the stage when one of its files is gone."""
    run_dir = plan.run_dir
    files = [save_chars(run_dir, chars)] if chars is not None else []
    fault_point("signature_file")
    figure = save_figure(signature_figure(signature), run_dir / "signature.png")
    fault_point("signature_file")
    log_signature(loggers, signature, figure)
    reports = [
        *write_basis_report(signature, run_dir, loggers),
        *write_layer_report(signature, run_dir, loggers),
    ]
    fault_point("signature_file")
    names = [path.name for path in (*files, figure, *reports)]
    if "untrained" in signature.extra:  # written by untrained_signature before these
        names += ["untrained/signature.json", "untrained/signature.csv"]
    signature.extra["files"] = sorted({*names, "signature.csv"})
    files.extend(signature.save(run_dir))
    logged = not plan.reuse_ckpt  # the base stage of this run logged the checkpoint
    log_signature_artifact(loggers, signature, [*files, figure], plan.base_ckpt, logged)
    log.info("signature written to %s", run_dir / "signature.json")


def _complete_signature(run_dir: Path, inputs: dict) -> Signature | None:
    """The run dir's signature when it was made from these inputs and all its files are
    there; otherwise None, after saying why the stage runs again."""
    existing = run_dir / "signature.json"
    if not existing.is_file():
        return None
    previous = Signature.load(existing)
    recorded = {
        "checkpoint_sha256": previous.model.get("checkpoint_sha256"),
        "data_sha256": previous.data.get("sha256"),
        "seed": previous.probe.get("seed"),
        "probe": previous.probe.get("config"),
    }
    changed = differences(recorded, inputs)
    missing = [name for name in previous.extra.get("files", []) if not (run_dir / name).is_file()]
    if changed:
        log.warning(
            "the signature in %s was made from other inputs (%s): computing it again",
            run_dir,
            "; ".join(changed),
        )
        return None
    if missing or "files" not in previous.extra:
        log.warning(
            "the signature in %s lacks %s: completing it",
            run_dir,
            ", ".join(missing) or "its list of files",
        )
        return None
    log.info("signature already complete in %s: skipping", run_dir)
    return previous


def _extraction_device(cfg: DictConfig) -> torch.device:
    wants_gpu = cfg.trainer.get("accelerator") in ("gpu", "cuda", "auto")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")
