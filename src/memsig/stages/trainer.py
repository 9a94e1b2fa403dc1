"""The Lightning Trainer both stages use, built from the `trainer` config group."""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig, OmegaConf


def make_trainer(cfg: DictConfig, loggers: list, **overrides) -> L.Trainer:
    """Hardware and loop settings from `trainer`, stage-specific settings as overrides. The
    loaders split batches across DDP ranks themselves (memsig.distributed), so Lightning's
    distributed sampler stays off."""
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    settings.update(use_distributed_sampler=False, **overrides)
    return L.Trainer(logger=loggers or False, default_root_dir=cfg.paths.output_dir, **settings)
