"""Signature stage: extract states once, fit every view x offset probe together and score
them; then every configured measure (control task, untrained baseline, online code, bootstrap
intervals, ...: `measures` in the config) adds its record; save and log the signature."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from memsig.extraction.loader import targets_of
from memsig.extraction.probe_parts import position_sets, probe_parts
from memsig.extraction.state_cache import ExtractSettings
from memsig.measures.bootstrap import test_documents
from memsig.measures.conditioning import Conditioning
from memsig.measures.context import MeasureContext, configured_measures
from memsig.models.checkpoint import (
    checkpoint_target,
    file_digest,
    load_base_checkpoint,
    restore_network,
)
from memsig.models.factorized import with_basis_ablations
from memsig.pipeline.plan import Plan, optional_list
from memsig.probes.baselines import prior_baselines
from memsig.probes.fit import FittedProbe, ProbeSetup, fit_and_test
from memsig.probes.multi_offset import indicator_columns, probe_views
from memsig.reports.bases import basis_divergence, write_basis_report
from memsig.reports.chars import character_record, save_chars
from memsig.reports.figures import save_figure, signature_figure
from memsig.reports.layers import write_layer_report
from memsig.reports.tracking import log_signature, log_signature_artifact
from memsig.runtime.distributed import is_rank_zero
from memsig.runtime.faults import fault_point
from memsig.runtime.identity import differences
from memsig.signature.health import health_record, health_warning
from memsig.signature.record import Signature, view_scores
from memsig.signature.summary import summarise

log = logging.getLogger(__name__)


def signature_stage(cfg: DictConfig, plan: Plan, loggers: list) -> Signature:
    """Extract states once, train every view x offset probe together, score; add every
    configured measure, the summary and the health record; save and log."""
    inputs = signature_inputs(cfg, plan)
    previous = _complete_signature(plan.run_dir, inputs)
    if previous is not None:
        return previous
    context = probe_signature(cfg, plan, loggers, inputs)
    signature = context.signature
    for measure in configured_measures(cfg.measures):
        signature.extra.update(measure(context))
    signature.extra["summary"] = summarise(signature)
    fit_positions = len(context.sets[0])
    signature.extra["health"] = health_record(signature, fit_positions, context.setup.num_classes)
    signature.extra.update(basis_divergence(signature))
    if is_rank_zero():
        _save_outputs(signature, _characters(context), plan, loggers)
        warning = health_warning(signature.extra["health"])
        if warning:
            log.warning(warning)
    return signature


def signature_inputs(cfg: DictConfig, plan: Plan) -> dict:
    """What a signature is made from: a rerun with other inputs computes it again."""
    return {
        "checkpoint_sha256": file_digest(plan.base_ckpt),
        "data_sha256": plan.corpus.fingerprint(),
        "seed": cfg.seed,
        "probe": OmegaConf.to_container(cfg.probe, resolve=True),
    }


def probe_signature(cfg: DictConfig, plan: Plan, loggers: list, inputs: dict) -> MeasureContext:
    """Extract the probed views of the base model over the probe parts (cached), fit and test
    the configured probe kind on them: the signature's scores, and what the measures read."""
    payload = load_base_checkpoint(plan.base_ckpt)
    net = plan.network if plan.network is not None else restore_network(payload)
    net = with_basis_ablations(net, cfg.probe.get("ablate_bases", False))
    device = _extraction_device(cfg)
    net.to(device)
    views = probe_views(net.view_dims, optional_list(cfg.probe.views))
    settings = ExtractSettings(**cfg.probe.extract)
    identity = {
        "checkpoint_sha256": inputs["checkpoint_sha256"],
        "data": inputs["data_sha256"],
        "views": views,
        "dtype": settings.dtype,
        "settings": vars(settings),
    }
    corpus, offsets = plan.corpus, plan.offsets
    parts = probe_parts(net, corpus, identity, settings, offsets, plan.run_dir / "cache", device)
    num_classes = len(corpus.vocab)
    conditioning = Conditioning(cfg.probe.get("condition_on"), views, num_classes)
    sets = tuple(map(conditioning.batches, position_sets(parts, offsets, cfg.probe.val_fraction)))
    # the derived heads of probe.condition_on are not marked: they keep the plain whitening
    indicators = indicator_columns(net, views)
    setup = ProbeSetup(cfg, plan.run_dir, conditioning.probe_dims, num_classes, device, indicators)
    documents = test_documents(cfg, sets[2], parts["probe_test"].blocks)
    key = [identity, inputs["probe"], offsets]
    fitted = fit_and_test(setup, sets, key, loggers, documents)
    model = {
        "name": payload["model"]["name"],
        "params": sum(p.numel() for p in net.parameters()),
        "checkpoint": str(plan.base_ckpt),
        "checkpoint_sha256": inputs["checkpoint_sha256"],
        "target": checkpoint_target(payload),
        "metrics": dict(payload["metrics"]),
    }
    signature = scored_signature(cfg, plan, inputs, model, parts, sets, views, fitted)
    return MeasureContext(
        cfg, setup, sets, key, documents, fitted, signature, corpus, plan.run_dir,
        payload, identity, conditioning,
    )  # fmt: skip


def scored_signature(
    cfg: DictConfig,
    plan: Plan,
    inputs: dict,
    model: dict,
    parts: dict,
    sets: tuple,
    views: dict[str, int],
    fitted: FittedProbe,
) -> Signature:
    """The signature record of a tested probe: `model` as recorded, the data, the probe, the
    baselines and the scores of every view x offset."""
    corpus, offsets = plan.corpus, plan.offsets
    fit, _, test = sets
    baseline = prior_baselines(targets_of(fit), targets_of(test), len(corpus.vocab))
    return Signature(
        model=model,
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
            "config": inputs["probe"],
            **fitted.record,
        },
        offsets=list(offsets),
        baseline=baseline,
        views=view_scores(views, offsets, fitted.results, baseline),
    )


def _characters(context: MeasureContext) -> dict | None:
    """chars.json's record (character corpora only): per-class accuracy and a passage's
    recall under the signature's probe."""
    if context.corpus.unit != "char":
        return None
    probe = context.cfg.probe
    test = context.sets[2]
    vocab = context.corpus.vocab
    return character_record(
        context.fitted.probe, test, vocab, probe.passage_chars, probe.batch_size
    )


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
