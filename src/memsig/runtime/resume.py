"""Resuming interrupted training exactly: after every epoch, the best weights so far and the full
loop state (optimizer, counters, early stopping, RNG states, whether training is over) are
written atomically, and a rerun continues from them to the result an uninterrupted run gets."""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint

from memsig.runtime.atomic import signals_deferred, write_json_atomic
from memsig.runtime.distributed import is_rank_zero
from memsig.runtime.errors import MemsigError
from memsig.runtime.faults import fault_point
from memsig.runtime.identity import differences

log = logging.getLogger(__name__)
LAST = "last.ckpt"
BEST = "best.ckpt"
INPUTS = "inputs.json"


class ResumeCheckpoint(Checkpoint):
    """After every epoch: `best.ckpt` (weights) when `monitor` improved, then `last.ckpt` (the
    whole training state), each written under a temporary name in `directory` then renamed,
    so a run killed at any moment leaves complete files only.

    A `Checkpoint`, so Lightning runs it after every other callback's epoch end (early
    stopping included): `last.ckpt` holds the state the next epoch starts from. On resume,
    the RNG states and the stop decision are put back before the first epoch runs, so a
    finished fit is never trained further."""

    def __init__(self, directory: Path, stage: str, monitor: str | None = None) -> None:
        self.directory = Path(directory)
        self.stage = stage  # "base" or "probe": names the fault point after each save
        self.monitor = monitor  # lower is better; None: no best weights kept
        self.best_score: float | None = None
        self.state: dict = {}  # saved with last.ckpt
        self.restored: dict | None = None

    def state_dict(self) -> dict:
        return self.state

    def load_state_dict(self, state_dict: dict) -> None:
        self.restored = state_dict
        self.best_score = state_dict.get("best_score")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.restored is None:
            return
        set_rng_states(self.restored["rng"])
        trainer.should_stop = self.restored["should_stop"]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.monitor is not None:
            score = float(trainer.callback_metrics[self.monitor])
            if self.best_score is None or score < self.best_score:
                self.best_score = score
                self._save(trainer, BEST, weights_only=True)
        self.state = {
            "best_score": self.best_score,
            "should_stop": bool(trainer.should_stop),
            "rng": rng_states(),
        }
        self._save(trainer, LAST, weights_only=False)
        fault_point(f"{self.stage}_epoch")

    def _save(self, trainer: L.Trainer, name: str, weights_only: bool) -> None:
        """Every rank calls (DDP), rank 0 writes; a failed write (disk full) leaves no file.
        Only rank 0 touches the file: another rank removing the temporary file could beat
        rank 0's rename."""
        tmp, path = self.directory / f".{name}.tmp", self.directory / name
        try:
            with signals_deferred():  # a stop signal waits until the checkpoint is written
                trainer.save_checkpoint(tmp, weights_only=weights_only)  # rank 0 writes
                if trainer.is_global_zero:
                    tmp.replace(path)
        finally:
            if trainer.is_global_zero:  # the only writer: other ranks never touch its file
                tmp.unlink(missing_ok=True)

    def best_weights(self) -> dict:
        """The state dict of the best epoch's weights."""
        best = self.directory / BEST
        if not best.is_file():
            raise MemsigError(
                f"{best} is missing: training finished but its best weights are gone; "
                f"delete {self.directory} (or rerun with resume=false) to train again"
            )
        return torch.load(best, map_location="cpu", weights_only=True)["state_dict"]


def rng_states() -> dict:
    """Every random generator training may draw from, as tensors and plain numbers (so the
    checkpoint loads with weights_only=True)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping) -> None:
    torch.set_rng_state(states["torch"])
    keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def resume_point(directory: Path, resume: bool, inputs: Mapping) -> Path | None:
    """The last checkpoint of an interrupted fit of the same `inputs` to continue from, else
    None (training starts over in an emptied `directory`). A fit of other inputs is refused
    unless `resume=false`, which discards it; a file that cannot be read is never trusted."""
    directory = Path(directory)
    last, recorded = directory / LAST, directory / INPUTS
    if last.is_file() and resume:
        changed = differences(_read_inputs(recorded), inputs)
        if changed:
            raise MemsigError(
                f"{directory} holds an interrupted training made from other inputs "
                f"({'; '.join(changed)}): rerun with the settings it was started with to "
                "continue it, use another run dir (hydra.run.dir=...), or resume=false to "
                "discard it"
            )
        try:
            torch.load(last, map_location="cpu", weights_only=True)
        except Exception as err:  # never trust a damaged file
            log.warning("%s cannot be loaded (%s): training starts over", last, err)
        else:
            log.info("resuming from %s", last)
            return last
    if is_rank_zero():
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        write_json_atomic(recorded, dict(inputs))
    return None


def _read_inputs(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
