"""The Lightning system that trains a CTC speech encoder: SpecAugment, CTC loss, greedy CER/WER."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.text import CharErrorRate, WordErrorRate

from memsig.models.ctc_encoder import CTCEncoder, greedy_decode
from memsig.runtime.errors import BASE_MODEL_FIX, check_finite_loss


class CTCSystem(L.LightningModule):
    """Train an injected :class:`CTCEncoder` with CTC; validate with greedy-decoding CER/WER.

    SpecAugment (`augment`) is applied between the preprocessor and the encoder in training
    steps only. Frame lengths come from the network, so subsampling is accounted for.
    """

    def __init__(
        self,
        net: CTCEncoder,
        optimizer: Callable[..., torch.optim.Optimizer],
        vocab: Sequence[str],
        augment: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.augment = augment
        self.optimizer_factory = optimizer
        self.vocab = list(vocab)
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.val_cer = CharErrorRate()
        self.val_wer = WordErrorRate()

    def _loss(self, batch, augment) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        waves, lengths, targets, target_lengths = batch
        log_probs, frames = self.net(waves, lengths, augment)
        loss = F.ctc_loss(
            log_probs.transpose(0, 1),
            targets,
            frames,
            target_lengths,
            blank=self.net.blank,
            zero_infinity=True,
        )
        return loss, log_probs, frames

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss(batch, self.augment)
        check_finite_loss(loss, self.global_step, "the CTC loss", BASE_MODEL_FIX)
        self.train_loss(loss)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def transcribe(self, log_probs: torch.Tensor, frames: torch.Tensor) -> list[str]:
        return [
            "".join(self.vocab[i] for i in ids)
            for ids in greedy_decode(log_probs, frames, self.net.blank)
        ]

    def spell(self, targets: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Transcripts of padded grapheme ids."""
        pairs = zip(targets.tolist(), lengths.tolist(), strict=True)
        return ["".join(self.vocab[i] for i in t[:n]) for t, n in pairs]

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, log_probs, frames = self._loss(batch, None)
        self.val_loss.update(loss, weight=len(frames))
        _, _, targets, target_lengths = batch
        references = self.spell(targets, target_lengths)
        hypotheses = self.transcribe(log_probs, frames)
        self.val_cer.update(hypotheses, references)
        self.val_wer.update(hypotheses, references)

    def on_validation_epoch_end(self) -> None:
        self.log("val/loss", self.val_loss.compute())
        self.log("val/cer", self.val_cer.compute(), prog_bar=True)
        self.log("val/wer", self.val_wer.compute(), prog_bar=True)
        for metric in (self.val_loss, self.val_cer, self.val_wer):
            metric.reset()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=self.parameters())
