"""Everything checked before any work starts: the config, the data, a checkpoint to reuse."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from memsig.cluster import check_local_ddp_in_sweep
from memsig.config import build, in_sweep
from memsig.data.corpus import Corpus
from memsig.errors import ConfigError
from memsig.models.checkpoint import build_network, load_base_checkpoint, restore_network
from memsig.models.factorized import with_basis_ablations
from memsig.objective import check_objective
from memsig.probes.local_context import check_orders
from memsig.probes.multi_offset import probe_views
from memsig.probes.offsets import resolve_offsets, valid_positions
from memsig.validate import check_config

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


def prepare(cfg: DictConfig) -> Plan:
    """Validate the config, the data and any checkpoint to reuse, before training anything."""
    if cfg.stage not in STAGES:
        raise ConfigError(f"stage={cfg.stage}: must be one of {', '.join(STAGES)}")
    check_config(cfg)
    check_local_ddp_in_sweep(cfg.trainer, in_sweep())
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
    views = probe_views(with_basis_ablations(net, ablate).view_dims, optional_list(cfg.probe.views))
    check_objective(cfg.objective.metric, cfg.objective.view, list(views))
    check_orders(cfg.probe.reference_orders, len(corpus.vocab))
    for part in ("probe_train", "probe_test"):
        if len(valid_positions(len(corpus.parts[part]), offsets)) < 2:
            raise ConfigError(
                f"offsets {min(offsets)}..{max(offsets)} leave no positions in the {part} part "
                f"({len(corpus.parts[part])} tokens): lower probe.max_offset or enlarge "
                f"data.split.{part}"
            )
    return Plan(run_dir, corpus, cfg.stage, base_ckpt, reuse, offsets)


def optional_list(value) -> list | None:
    """A config list as a plain list (None stays None)."""
    return None if value is None else list(value)
