"""Everything checked before any work starts: the config, the data, a checkpoint to reuse."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from memsig.config.compose import build, in_sweep
from memsig.config.validate import check_command_line_keys, check_config
from memsig.data.corpus import Corpus
from memsig.data.speech import SpeechCorpus
from memsig.data.vocabulary import recode
from memsig.extraction.offsets import resolve_offsets, valid_positions
from memsig.measures.bootstrap import check_documents, document_ids
from memsig.measures.context import configured_measures
from memsig.measures.local_context import check_orders
from memsig.measures.online_code import block_ends
from memsig.models.checkpoint import (
    build_network,
    checkpoint_target,
    load_base_checkpoint,
    restore_network,
    save_base_checkpoint,
    state_digest,
)
from memsig.models.external import is_external, load_weights, read_vocab
from memsig.models.factorized import with_basis_ablations
from memsig.models.ngram import bits_per_char
from memsig.pipeline.budget import check_disk_for_run, check_vocabulary
from memsig.probes.multi_offset import probe_views
from memsig.runtime.cluster import check_local_ddp_in_sweep
from memsig.runtime.errors import ConfigError
from memsig.runtime.identity import differences
from memsig.signature.objective import check_objective

STAGES = ("all", "base", "signature")
log = logging.getLogger(__name__)


@dataclass
class Plan:
    """Everything checked before any work starts."""

    run_dir: Path
    corpus: Corpus | SpeechCorpus
    stage: str
    base_ckpt: Path
    reuse_ckpt: bool
    offsets: list[int]
    inputs: dict  # what the base model is (or was) made from: see base_inputs
    # the network an external model's import built, or a Python caller's own object
    # (memsig.signature_of), probed as it is; None: the network is rebuilt from base_ckpt
    network: torch.nn.Module | None = None


def prepare(
    cfg: DictConfig, network: torch.nn.Module | None = None, corpus: Corpus | None = None
) -> Plan:
    """Validate the config, the data and any checkpoint to reuse, before training anything.
    A Python caller may hand over the network to probe (its checkpoint is written from it)
    and the corpus (then `data` is not built)."""
    if cfg.stage not in STAGES:
        raise ConfigError(f"stage={cfg.stage}: must be one of {', '.join(STAGES)}")
    check_command_line_keys()
    check_config(cfg)
    check_local_ddp_in_sweep(cfg.trainer, in_sweep())
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    offsets = resolve_offsets(optional_list(cfg.probe.offsets), cfg.probe.max_offset)
    if corpus is None:
        corpus = build(cfg.data)
    if cfg.model.get("fit") == "counts" and corpus.target != -1:
        raise ConfigError(
            f"model={cfg.model.name} is a count language model and cannot learn "
            f"data={corpus.name}'s target (the input {corpus.target} steps back): "
            "train a neural model on it, e.g. model=gru"
        )
    if network is not None or (is_external(cfg.model) and cfg.base_ckpt is None):
        # the imported network is the one probed: it is not built again from base.ckpt
        base_ckpt, corpus, payload, inputs, network = _import_external(
            cfg, run_dir, corpus, network
        )
        reuse = True
    else:
        base_ckpt, reuse, payload, inputs = _base_checkpoint(cfg, run_dir, corpus)
        if is_external(cfg.model):  # base_ckpt: a model imported by an earlier run
            corpus = recode(corpus, payload["vocab"], cfg.model.get("unknown"))
    if payload is not None and list(payload["vocab"]) != list(corpus.vocab):
        raise ConfigError(
            f"the vocabulary of {base_ckpt} ({len(payload['vocab'])} symbols) differs from "
            f"data={corpus.name}'s ({len(corpus.vocab)} symbols): use the data the model was "
            "trained on, or train a new model (drop base_ckpt)"
        )
    if network is not None:
        net = network
    elif payload is not None:
        net = restore_network(payload)
    else:
        net = build_network(OmegaConf.to_container(cfg.model, resolve=True), len(corpus.vocab))
    trains_base = cfg.stage != "signature" and not reuse
    _check_probes(cfg, run_dir, corpus, net, offsets, trains_base)
    if isinstance(corpus, SpeechCorpus):
        if cfg.probe.get("condition_on") is not None:
            raise ConfigError(
                "probe.condition_on reads the last m symbols of a stream; speech corpora have "
                "none: set probe.condition_on=null"
            )
        check_speech_probe(corpus, offsets, cfg.probe.reference_orders)
        return Plan(run_dir, corpus, cfg.stage, base_ckpt, reuse, offsets, inputs, network)
    for part in ("probe_train", "probe_test"):
        if len(valid_positions(len(corpus.parts[part]), offsets)) < 2:
            raise ConfigError(
                f"offsets {min(offsets)}..{max(offsets)} leave no positions in the {part} part "
                f"({len(corpus.parts[part])} tokens): lower probe.max_offset or enlarge "
                f"data.split.{part}"
            )
    _check_reliability_options(cfg, corpus, offsets)
    return Plan(run_dir, corpus, cfg.stage, base_ckpt, reuse, offsets, inputs, network)


def _base_checkpoint(
    cfg: DictConfig, run_dir: Path, corpus: Corpus | SpeechCorpus
) -> tuple[Path, bool, dict | None, dict]:
    """The base checkpoint the run probes (`base_ckpt`, or the run dir's own), whether it is
    reused rather than trained, its payload when there is one, and the base inputs (the
    checkpoint's when given; a run dir's must match the config's)."""
    inputs = base_inputs(OmegaConf.to_container(cfg.model, resolve=True), cfg.seed, corpus)
    if cfg.base_ckpt is not None:
        base_ckpt = Path(cfg.base_ckpt).expanduser().resolve()
        if cfg.stage == "base":
            raise ConfigError(
                "stage=base trains a new model: drop base_ckpt, or use stage=signature"
            )
        payload = load_base_checkpoint(base_ckpt)
        _use_checkpoint_model(cfg, payload, base_ckpt)
        return base_ckpt, True, payload, recorded_inputs(payload)
    base_ckpt = run_dir / "checkpoints" / "base.ckpt"
    reuse = base_ckpt.is_file()
    if cfg.stage == "signature" and not reuse:
        raise ConfigError(
            f"stage=signature needs a trained model: set base_ckpt=PATH/checkpoints/base.ckpt "
            f"(none found in {run_dir})"
        )
    payload = load_base_checkpoint(base_ckpt) if reuse else None
    if payload is not None:
        _check_recorded_inputs(payload, inputs, run_dir, base_ckpt)
    return base_ckpt, reuse, payload, inputs


def _check_recorded_inputs(payload: dict, inputs: dict, run_dir: Path, base_ckpt: Path) -> None:
    """The run dir's base model was made from these inputs: a rerun never mixes models."""
    recorded = recorded_inputs(payload)
    changed = differences(recorded, {k: inputs.get(k) for k in recorded})
    if changed:
        raise ConfigError(
            f"{run_dir} already holds a base model made from other inputs "
            f"({'; '.join(changed)}): start a new run dir (hydra.run.dir=...), probe "
            f"that model from one with base_ckpt={base_ckpt}, or delete its checkpoints/"
        )


def _import_external(
    cfg: DictConfig,
    run_dir: Path,
    corpus: Corpus | SpeechCorpus,
    network: torch.nn.Module | None,
) -> tuple[Path, Corpus, dict, dict, torch.nn.Module]:
    """A model trained elsewhere (`model=external`, or a caller's network object) has nothing
    to train: its weights go into the run dir's base checkpoint, which every later step
    reads as any other. Returns the checkpoint, the corpus numbered by the model's
    vocabulary, the checkpoint's payload, the inputs it records and the network."""
    if cfg.stage == "base":
        raise ConfigError(
            "stage=base trains a model, and an external model is trained already: use "
            "stage=signature (or all) to probe it"
        )
    if isinstance(corpus, SpeechCorpus):
        raise ConfigError(
            f"an external model reads a token stream; data={corpus.name} is speech: probe it "
            "on a text corpus (data=text, data=markov, ...)"
        )
    given = network is not None  # a network object brings its own weights
    _check_external_keys(
        cfg.model, ("target", "vocab") if given else ("target", "weights", "vocab")
    )
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    vocab = read_vocab(model_cfg["vocab"])
    if network is None:
        network = build_network(model_cfg, len(vocab))
        load_weights(network, model_cfg["weights"])
    elif cfg.probe.untrained_baseline:
        raise ConfigError(
            "probe.untrained_baseline rebuilds the model from its config: a network "
            "object has none; use model=external (model.target, model.kwargs) for it"
        )
    corpus = recode(corpus, vocab, model_cfg.get("unknown"))
    network.eval()
    weights = state_digest(network.state_dict())
    inputs = {"model": model_cfg, "target": -1, "weights_sha256": weights}
    base_ckpt = run_dir / "checkpoints" / "base.ckpt"
    if not base_ckpt.is_file():
        val = corpus.parts["val"]
        with torch.no_grad():
            metrics = {"val/bpc": bits_per_char(network, val)} if len(val) > 1 else {}
        save_base_checkpoint(base_ckpt, network, model_cfg, vocab, corpus.unit, metrics, -1, inputs)
        log.info("external model imported into %s (metrics %s)", base_ckpt, metrics)
    payload = load_base_checkpoint(base_ckpt)
    _check_recorded_inputs(payload, inputs, run_dir, base_ckpt)
    return base_ckpt, corpus, payload, inputs, network


def _check_external_keys(model: DictConfig, keys: tuple[str, ...]) -> None:
    """model=external names the model's class, weights and vocabulary."""
    missing = [key for key in keys if OmegaConf.is_missing(model, key)]
    if missing:
        raise ConfigError(
            f"model=external needs {', '.join(f'model.{key}' for key in missing)}: the import "
            "path of your nn.Module class, its state_dict file and its vocabulary JSON "
            "(README: Probe your own model)"
        )


def _check_probes(
    cfg: DictConfig,
    run_dir: Path,
    corpus: Corpus | SpeechCorpus,
    net: torch.nn.Module,
    offsets: list[int],
    trains_base: bool,
) -> None:
    """The probed views exist, the objective names one of them, and the probes' memory and
    the run's disk needs fit this machine."""
    ablate = cfg.probe.get("ablate_bases", False)
    views = probe_views(with_basis_ablations(net, ablate).view_dims, optional_list(cfg.probe.views))
    check_objective(cfg.objective.metric, cfg.objective.view, list(views))
    configured_measures(cfg.measures)  # every measure named can be imported
    check_orders(cfg.probe.reference_orders, len(corpus.vocab))
    classes = len(corpus.vocab)
    # a trained kind has one head per offset and L2 strength; a closed-form one per offset
    heads = len(offsets) * len(cfg.probe.get("l2", [None]))
    check_vocabulary(classes, cfg.max_vocab, corpus.name, views, heads, cfg.probe.batch_size)
    probes = cfg.stage != "base"
    check_disk_for_run(
        run_dir,
        sum(p.numel() for p in net.parameters()) if trains_base else None,
        views if probes else {},
        heads,
        classes,
        _cached_positions(corpus) if probes else 0,
        np.dtype(cfg.probe.extract.dtype).itemsize,
    )


def base_inputs(model_cfg: dict, seed: int, corpus: Corpus | SpeechCorpus) -> dict:
    """What a trained base model is made from: the model config, the seed, the data (its
    fingerprint) and the task (the offset it learns to emit)."""
    return {
        "model": model_cfg,
        "seed": seed,
        "data_sha256": corpus.fingerprint(),
        "target": getattr(corpus, "target", -1),  # speech corpora: none (CTC)
    }


def recorded_inputs(payload: dict) -> dict:
    """The base inputs a checkpoint records (older checkpoints: model and task only)."""
    return {
        "model": payload["model"],
        "target": checkpoint_target(payload),
        **payload.get("inputs", {}),
    }


def _use_checkpoint_model(cfg: DictConfig, payload: dict, path: Path) -> None:
    """The model probed is the checkpoint's: its config replaces the configured one (name,
    sizes, everything recorded and titled), with a warning when the two disagree."""
    model = payload["model"]
    configured = OmegaConf.to_container(cfg.model, resolve=True)
    if configured != model:
        changed = differences(model, configured)
        log.warning(
            "base_ckpt=%s holds model %s; the configured model (%s) is ignored: %s",
            path,
            model.get("name"),
            configured.get("name"),
            "; ".join(changed[:4]) + ("; ..." if len(changed) > 4 else ""),
        )
    with open_dict(cfg):
        cfg.model = OmegaConf.create(model)


def _cached_positions(corpus: Corpus | SpeechCorpus) -> int:
    """Rows of the state cache of a token stream (a speech corpus's frames are counted only
    when its cache is built: its extraction checks the disk then)."""
    if isinstance(corpus, SpeechCorpus):
        return 0
    return len(corpus.parts["probe_train"]) + len(corpus.parts["probe_test"])


def _check_reliability_options(cfg: DictConfig, corpus: Corpus, offsets: list[int]) -> None:
    """Enough probe-test documents for a bootstrap, and an online-code schedule whose blocks
    all hold positions."""
    boot = cfg.probe.get("bootstrap")
    if boot is not None and boot.resamples:
        test_tokens = len(corpus.parts["probe_test"])
        positions = np.asarray(valid_positions(test_tokens, offsets))
        documents = int(document_ids(positions, boot.block_chars).max()) + 1
        check_documents(documents, boot.block_chars, test_tokens)
    if cfg.probe.get("mdl"):
        train_positions = len(valid_positions(len(corpus.parts["probe_train"]), offsets))
        block_ends(int(train_positions * (1 - cfg.probe.val_fraction)), cfg.probe.mdl_schedule)


def check_speech_probe(corpus: SpeechCorpus, offsets: list[int], reference_orders) -> None:
    """Offsets count graphemes inside an utterance: some transcript must span them all."""
    if reference_orders:
        raise ConfigError(
            "probe.reference_orders reads a character stream; speech corpora have none: "
            "set probe.reference_orders=[]"
        )
    span = max(0, max(offsets)) + max(0, -min(offsets)) + 1
    for part in ("probe_train", "probe_test"):
        longest = max(len(u.tokens) for u in corpus.parts[part])
        if longest < span:
            raise ConfigError(
                f"offsets {min(offsets)}..{max(offsets)} need transcripts of {span} graphemes, "
                f"but the longest in the {part} part has {longest}: lower probe.max_offset"
            )


def optional_list(value):
    """A config list as a plain list; anything else (None, a string or number given where a
    list belongs) as it is, for the checks to name it."""
    return OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
