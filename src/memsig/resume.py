"""Resuming interrupted training: an atomic last checkpoint after every epoch, and the rule for
picking it up again."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)
LAST = "last.ckpt"


class ResumeCheckpoint(Callback):
    """Write `<directory>/last.ckpt` at the end of every epoch (after validation and early
    stopping have run), under a temporary name then renamed, so a run killed at any moment
    leaves either the previous epoch's file or this one."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        tmp = self.directory / f".{LAST}.tmp"
        # the full state (optimizer, loops, callbacks); every rank calls, rank 0 writes
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, self.directory / LAST)


def resume_point(directory: Path, resume: bool) -> Path | None:
    """The last checkpoint of an interrupted fit to continue from (`resume=true`), else None;
    with `resume=false`, or a file that cannot be read, training starts over."""
    last = Path(directory) / LAST
    if not last.is_file():
        return None
    if resume:
        try:
            torch.load(last, map_location="cpu", weights_only=True)
        except Exception as err:  # never trust a damaged file
            log.warning("%s cannot be loaded (%s): training starts over", last, err)
        else:
            log.info("resuming from %s", last)
            return last
    shutil.rmtree(directory)
    return None
