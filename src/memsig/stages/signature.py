"""Signature stage: extract states once, train every view x offset probe together, score,
save and log the signature."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import DictConfig, OmegaConf

from memsig.bases import basis_divergence, write_basis_report
from memsig.chars import character_record, save_chars
from memsig.data.corpus import Corpus
from memsig.errors import ConfigError
from memsig.models.checkpoint import (
    build_network,
    file_digest,
    load_base_checkpoint,
    restore_network,
)
from memsig.models.factorized import with_basis_ablations
from memsig.plan import Plan, optional_list
from memsig.plots import save_figure, signature_figure
from memsig.probes.baselines import class_prior, prior_baselines, prior_code_bits
from memsig.probes.bootstrap import check_documents, document_ids
from memsig.probes.control import control_labels, relabelled
from memsig.probes.loader import PositionBatches, position_loader, targets_of
from memsig.probes.local_context import local_context_reference
from memsig.probes.mdl import block_ends, online_code_bits
from memsig.probes.multi_offset import MultiOffsetProbe, probe_views
from memsig.probes.offsets import valid_positions
from memsig.reliability import bootstrap_intervals, control_record, summarise
from memsig.resume import ResumeCheckpoint, resume_point
from memsig.signature import Signature, ViewScores
from memsig.stages.trainer import make_trainer
from memsig.state_cache import ExtractSettings, StateCache, build_cache
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
    batch = cfg.probe.batch_size
    num_classes = len(corpus.vocab)
    documents = _test_documents(cfg, test)
    probe_key = [identity, probe_cfg, offsets]
    trained = train_and_test(
        cfg,
        loggers,
        plan,
        views,
        num_classes,
        caches["probe_train"],
        (fit, val, test),
        probe_key,
        documents,
    )
    chars = character_record(trained.probe, test, corpus.vocab, cfg.probe.passage_chars, batch)
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
        probe={"kind": cfg.probe.kind, "epochs": trained.epochs, "config": probe_cfg},
        offsets=list(offsets),
        baseline=baseline,
        views=view_scores(views, offsets, trained.results, baseline),
    )
    control = None
    if cfg.probe.control:
        labels = control_labels(targets_of(fit), num_classes, cfg.seed)
        sets = tuple(relabelled(part, labels) for part in (fit, val, test))
        control = train_and_test(
            cfg,
            [],
            plan,
            views,
            num_classes,
            caches["probe_train"],
            sets,
            [*probe_key, "control"],
            documents,
        )
        majority = prior_baselines(targets_of(sets[0]), targets_of(sets[2]), num_classes)
        signature.extra["control"] = control_record(
            signature, labels, control.results, np.asarray(majority["majority_accuracy"])
        )
    if cfg.probe.untrained_baseline:
        signature.extra["untrained"] = untrained_signature(
            cfg, plan, payload, identity, (fit, val, test), signature
        )
    if cfg.probe.mdl:
        signature.extra["mdl"] = online_code(
            cfg, plan, views, num_classes, caches["probe_train"], (fit, val), probe_key
        )
    if documents is not None:
        prior = class_prior(targets_of(fit), num_classes)
        boot = cfg.probe.bootstrap
        signature.extra["intervals"] = {
            **bootstrap_intervals(
                signature,
                trained.results,
                control.results if control is not None else None,
                prior_code_bits(prior, targets_of(test)),
                documents,
                boot.resamples,
                boot.level,
                cfg.seed,
            ),
            "block_chars": boot.block_chars,
        }
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


@dataclass
class ProbeRun:
    """A probe trained on fit/val and tested: its test results and epochs trained."""

    probe: MultiOffsetProbe
    results: dict[str, torch.Tensor]
    epochs: int


def train_and_test(
    cfg: DictConfig,
    loggers: list,
    plan: Plan,
    views: dict[str, int],
    num_classes: int,
    moments: StateCache,
    sets: tuple[PositionBatches, PositionBatches, PositionBatches],
    key: list,
    documents: np.ndarray | None = None,
) -> ProbeRun:
    """Train the configured probe on fit (early stopping on val) and score it on test; with
    `documents`, the test scores are also summed per document. `key` names the run's resume
    checkpoints; the signature, control, untrained and online-code probes all come from here."""
    fit, val, test = sets
    # the same probe whether or not the base model was trained in this process
    L.seed_everything(cfg.seed, verbose=False)
    probe = MultiOffsetProbe(
        views,
        len(fit.offsets),
        num_classes,
        instantiate(cfg.probe.optimizer),
        moments.mean,
        moments.cov,
    )
    stop = EarlyStopping(
        monitor="probe/val/best_xent_bits",
        mode="min",
        patience=cfg.probe.patience,
        min_delta=cfg.probe.min_delta,
    )
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()
    checkpoints = plan.run_dir / "checkpoints" / f"probe-{digest[:12]}"
    trainer = make_trainer(
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
    if documents is not None:
        probe.keep_document_sums(documents)
    trainer.test(probe, position_loader(test, batch, shuffle=False), verbose=False)
    return ProbeRun(probe, probe.test_results, trainer.current_epoch)


def view_scores(
    views: dict[str, int], offsets: list[int], results: dict, baseline: dict
) -> dict[str, ViewScores]:
    """Each view's scores from a probe's test results."""
    return {
        v: ViewScores.from_scores(
            d,
            offsets,
            results["accuracy"][i].tolist(),
            results["xent_bits"][i].tolist(),
            baseline["prior_entropy_bits"],
        )
        for i, (v, d) in enumerate(views.items())
    }


def untrained_signature(
    cfg: DictConfig,
    plan: Plan,
    payload: dict,
    identity: dict,
    sets: tuple[PositionBatches, PositionBatches, PositionBatches],
    trained: Signature,
) -> dict:
    """Probe the same architecture with random weights (initialised as base training
    initialises it, from `seed`) exactly as the trained one; its own signature goes to
    untrained/, its views into the trained signature's `untrained` key."""
    L.seed_everything(cfg.seed, verbose=False)
    net = with_basis_ablations(
        build_network(payload["model"], len(payload["vocab"])).eval(),
        cfg.probe.get("ablate_bases", False),
    )
    device = _extraction_device(cfg)
    net.to(device)
    identity = {**identity, "checkpoint_sha256": f"untrained-seed{cfg.seed}"}
    caches = {
        part: build_cache(
            net.views,
            plan.corpus.parts[part],
            plan.run_dir / "cache" / "untrained" / part,
            {**identity, "part": part, "model": payload["model"]},
            ExtractSettings(**cfg.probe.extract),
            device,
        )
        for part in ("probe_train", "probe_test")
    }
    parts = ("probe_train", "probe_train", "probe_test")
    moved = tuple(
        PositionBatches(caches[part].views, d.tokens, d.positions, d.offsets)
        for part, d in zip(parts, sets, strict=True)
    )
    probe_cfg = trained.probe["config"]
    run = train_and_test(
        cfg,
        [],
        plan,
        identity["views"],
        len(payload["vocab"]),
        caches["probe_train"],
        moved,
        [identity, probe_cfg, trained.offsets, "untrained"],
    )
    signature = Signature(
        model={**trained.model, "name": f"{trained.model['name']} (untrained)", "metrics": {}},
        data=trained.data,
        probe={**trained.probe, "epochs": run.epochs},
        offsets=trained.offsets,
        baseline=trained.baseline,
        views=view_scores(identity["views"], trained.offsets, run.results, trained.baseline),
    )
    signature.extra["summary"] = summarise(signature)
    directory = plan.run_dir / "untrained"
    directory.mkdir(exist_ok=True)
    signature.save(directory)
    return {
        "path": "untrained/signature.json",
        "views": {v: vars(s).copy() for v, s in signature.views.items()},
    }


def online_code(
    cfg: DictConfig,
    plan: Plan,
    views: dict[str, int],
    num_classes: int,
    moments: StateCache,
    sets: tuple[PositionBatches, PositionBatches],
    key: list,
) -> dict:
    """The online code length of the probe-train targets per view x offset (probes/mdl.py):
    for each block after the first, a probe trained on the blocks before it (early stopping on
    the usual validation block) codes it."""
    fit, val = sets
    schedule = list(cfg.probe.mdl_schedule)
    ends = block_ends(len(fit), schedule)
    sizes, xents = [], []
    for i, (start, stop) in enumerate(zip(ends, ends[1:], strict=False)):
        seen, coded = (
            PositionBatches(fit.views, fit.tokens, fit.positions[a:b], fit.offsets)
            for a, b in ((0, start), (start, stop))
        )
        run = train_and_test(
            cfg, [], plan, views, num_classes, moments, (seen, val, coded), [*key, "mdl", i]
        )
        sizes.append(stop - start)
        xents.append(run.results["xent_bits"].numpy())
    total = online_code_bits(ends[0], num_classes, sizes, xents)
    return {
        "schedule": schedule,
        "block_ends": ends,
        "positions": len(fit),
        "uniform_bits": len(fit) * math.log2(num_classes),
        "views": {
            v: {
                "online_code_bits": total[i].tolist(),
                "online_code_bits_per_token": (total[i] / len(fit)).tolist(),
            }
            for i, v in enumerate(views)
        },
    }


def _test_documents(cfg: DictConfig, test: PositionBatches) -> np.ndarray | None:
    """The bootstrap document of every test position (None when intervals are off)."""
    boot = cfg.probe.bootstrap
    if not boot.resamples:
        return None
    documents = document_ids(test.positions, boot.block_chars)
    check_documents(int(documents.max()) + 1, boot.block_chars, len(test.tokens))
    return documents


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
