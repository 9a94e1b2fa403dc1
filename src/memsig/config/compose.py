"""Where the configs live, and the resolvers they use."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = PROJECT_ROOT / "conf"


def in_sweep() -> bool:
    """True inside a job of a multirun (a sweep, an Optuna search)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_field(field: str) -> str | None:
    """In a multirun job, `group`: the sweep's folder name (every job of a sweep shares it) or
    `name`: the job's overrides (e.g. `model=gru,seed=1`); None in a single run."""
    from hydra.core.hydra_config import HydraConfig

    if not in_sweep():
        return None
    hydra = HydraConfig.get()
    if field == "group":
        return Path(hydra.runtime.output_dir).parent.name
    return hydra.job.override_dirname or str(hydra.job.num)


if not OmegaConf.has_resolver("memsig_root"):
    OmegaConf.register_new_resolver("memsig_root", lambda: str(PROJECT_ROOT))
    OmegaConf.register_new_resolver("memsig_sweep", sweep_field)


def build(node, **kwargs):
    """Instantiate a `_target_` node, letting the target's own errors (with their messages for
    the user) propagate instead of Hydra's wrapper."""
    from hydra.utils import instantiate

    return instantiate(node, _partial_=True)(**kwargs)
