"""The Lightning Trainer both stages use, built from the `trainer` config group."""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig, OmegaConf


def make_trainer(cfg: DictConfig, loggers: list, **overrides) -> L.Trainer:
    """Hardware and loop settings from `trainer`, stage-specific settings as overrides."""
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    settings.update(overrides)
    return L.Trainer(logger=loggers or False, default_root_dir=cfg.paths.output_dir, **settings)
