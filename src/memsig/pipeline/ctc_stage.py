"""Base stage for speech: train the CTC encoder, score CER/WER, save checkpoints/base.ckpt."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchmetrics.text import CharErrorRate, WordErrorRate

from memsig.data.speech import SpeechCorpus, Utterance
from memsig.data.utterances import utterance_loader
from memsig.models.asr import CTCSystem
from memsig.models.checkpoint import initial_network
from memsig.pipeline.plan import Plan
from memsig.pipeline.training import fit_best, publish_checkpoint

log = logging.getLogger(__name__)


@torch.no_grad()
def error_rates(
    system: CTCSystem, utterances: list[Utterance], sample_rate: int, batch_size: int
) -> dict[str, float]:
    """Greedy-decoding character and word error rates over utterances (eval mode, no augment)."""
    system.eval()
    cer, wer = CharErrorRate(), WordErrorRate()
    for waves, lengths, targets, target_lengths in utterance_loader(
        utterances, sample_rate, batch_size, False, shard=False
    ):
        log_probs, frames = system.net(waves.to(system.device), lengths.to(system.device))
        hypotheses = system.transcribe(log_probs, frames)
        references = system.spell(targets, target_lengths)
        cer.update(hypotheses, references)
        wer.update(hypotheses, references)
    return {"cer": float(cer.compute()), "wer": float(wer.compute())}


def train_ctc(cfg: DictConfig, plan: Plan, loggers: list) -> Path:
    """Train until val/cer stops improving; record val and probe-test CER/WER with the model."""
    corpus: SpeechCorpus = plan.corpus
    training = cfg.model.training
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    net = initial_network(model_cfg, len(corpus.vocab), cfg.seed)
    augment = instantiate(cfg.model.augment) if cfg.model.get("augment") else None
    system = CTCSystem(net, instantiate(cfg.model.optimizer), corpus.vocab, augment)
    rate, batch = corpus.sample_rate, training.batch_size
    if net.preprocessor.normalise == "global":
        net.preprocessor.fit_global(
            (w, n)
            for w, n, _, _ in utterance_loader(
                corpus.parts["train"], rate, batch, False, shard=False
            )
        )
    train = utterance_loader(
        corpus.parts["train"],
        rate,
        batch,
        True,
        cfg.seed,
        training.get("workers", 0),
        training.batch_by_length,
        shard=True,
    )
    # every rank scores all of val: the error rates' sums, added over the ranks, grow alike
    val = utterance_loader(corpus.parts["val"], rate, batch, False, shard=False)
    fit_best(cfg, plan, loggers, system, train, val, "val/cer")
    metrics = {}
    for part, prefix in (("val", "val"), ("probe_test", "test")):
        scores = error_rates(system, corpus.parts[part], rate, batch)
        metrics.update({f"{prefix}/{name}": value for name, value in scores.items()})
    for logger in loggers:
        logger.log_metrics(metrics)
    publish_checkpoint(plan, loggers, net, model_cfg, metrics)
    log.info(
        "speech encoder: val/cer %.4f, test/cer %.4f, saved %s",
        metrics["val/cer"],
        metrics["test/cer"],
        plan.base_ckpt,
    )
    return plan.base_ckpt
