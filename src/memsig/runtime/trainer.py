"""The Lightning Trainer every fit uses (base model and probes), built from the `trainer` config
group with stage-specific overrides, and a quiet one for probes fitted from a script."""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig, OmegaConf

from memsig.runtime.progress import LogProgress, log_lines_instead_of_bar


def make_trainer(cfg: DictConfig, loggers: list, stage: str, **overrides) -> L.Trainer:
    """Hardware and loop settings from `trainer`, stage-specific settings as overrides. The
    loaders split batches across DDP ranks themselves (memsig.runtime.distributed), so Lightning's
    distributed sampler stays off. When stdout is not a terminal, progress is reported as
    `stage: ...` log lines instead of a bar."""
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    settings.update(use_distributed_sampler=False, **overrides)
    if settings.get("enable_progress_bar", True) and log_lines_instead_of_bar():
        settings["enable_progress_bar"] = False
        settings["callbacks"] = [*settings.get("callbacks", []), LogProgress(stage)]
    return L.Trainer(logger=loggers or False, default_root_dir=cfg.paths.output_dir, **settings)


def quiet_trainer(max_epochs: int, **overrides) -> L.Trainer:
    """A Trainer without loggers, checkpoints, progress bars or sanity checks: for probes fitted
    from a script (benchmarks, tests) rather than through the pipeline."""
    settings = dict(
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**{**settings, **overrides})
