"""The Lightning system that trains any character network with carried state to label every
step: with the next symbol (a language model) or with another offset's input (a delayed copy)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from memsig.data.streams import IGNORE
from memsig.models.recurrent import detach_state
from memsig.runtime.errors import BASE_MODEL_FIX, check_finite_loss
from memsig.runtime.units import nats_to_bits

log = logging.getLogger(__name__)


class CharLM(L.LightningModule):
    """Truncated-BPTT training of an injected network that answers `forward` and `views`.

    `target` is the offset of the label at each step (extraction/offsets.py): -1 for the next
    symbol, d >= 0 for the input d steps back; the loader supplies the labels and marks steps
    without one as IGNORE, which the loss skips.

    The network's final state of chunk i starts chunk i + 1 (reset at the start of each
    epoch), so the model learns from contiguous streams rather than isolated windows.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        target: int = -1,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        # a compiled forward function (not a module: the state dict keeps the network's keys)
        self._forward = torch.compile(net.forward) if compile else net
        if compile and any(isinstance(m, nn.RNNBase) for m in net.modules()):
            log.warning(
                "compile=true: torch.compile does not trace nn.LSTM or nn.GRU layers and runs "
                "this network's forward uncompiled (no speed-up); set compile=false"
            )
        self.optimizer_factory = optimizer
        self.target = target
        self.train_loss = MeanMetric()
        self.val_nll = MeanMetric()
        self._state = {"train": None, "val": None}

    def _step(self, batch, batch_idx: int, split: str) -> torch.Tensor:
        inputs, targets = batch
        if batch_idx == 0:
            self._state[split] = None
        logits, state = self._forward(inputs, self._state[split])
        self._state[split] = detach_state(state)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, batch_idx, "train")
        check_finite_loss(loss, self.global_step, "the base model's loss", BASE_MODEL_FIX)
        self.train_loss(loss)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        nll = self._step(batch, batch_idx, "val")
        self.val_nll.update(nll, weight=(batch[1] != IGNORE).sum())

    def on_validation_epoch_end(self) -> None:
        # compute() reduces over DDP ranks; sync_dist only confirms the same value
        self.log("val/bpc", nats_to_bits(self.val_nll.compute()), prog_bar=True, sync_dist=True)
        self.val_nll.reset()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=self.parameters())
