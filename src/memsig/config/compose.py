"""Where the configs live, and the resolvers they use."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

# The configs ship inside the package (`memsig.conf`; in a checkout, src/memsig/conf links to
# the top-level conf/), so an installed memsig finds them wherever it is installed.
CONFIG_MODULE = "memsig.conf"
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def in_sweep() -> bool:
    """True inside a job of a multirun (a sweep, an Optuna search)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def launch_dir() -> str:
    """The folder memsig was started in: Hydra's `runtime.cwd` in a run (the same in every job
    of a sweep, wherever a launcher runs it), the working directory when composed from Python."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return HydraConfig.get().runtime.cwd
    return os.getcwd()


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


# the config groups that name a run (in this order), and tag it
NAMING_GROUPS = ("experiment", "model", "data", "probe")
TAGGING_GROUPS = (*NAMING_GROUPS, "debug")


def _choices() -> dict[str, str]:
    """The group choices of this Hydra run (`model: lstm`, ...); empty when composed from
    Python, where no run is named after them."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if v is not None}


def run_name(name: str | None) -> str | None:
    """The tracker's name of the run: `name`, else its choices (`lstm-markov-linear`, the
    experiment first when one is chosen); a sweep job adds its overrides (`...:seed=1`)."""
    choices = _choices()
    name = name or "-".join(choices[g] for g in NAMING_GROUPS if g in choices) or None
    job = sweep_field("name")
    return f"{name}:{job}" if name and job else name or job


def run_tags(tags: list[str]) -> list[str]:
    """The tracker's tags of the run: `tags`, then its choices (model, data, ...), once each."""
    choices = _choices()
    return list(dict.fromkeys([*tags, *(choices[g] for g in TAGGING_GROUPS if g in choices)]))


if not OmegaConf.has_resolver("memsig_launch_dir"):
    OmegaConf.register_new_resolver("memsig_launch_dir", launch_dir)
    OmegaConf.register_new_resolver("memsig_sweep", sweep_field)
    OmegaConf.register_new_resolver("memsig_run_name", run_name)
    OmegaConf.register_new_resolver("memsig_run_tags", run_tags)


def build(node, **kwargs):
    """Instantiate a `_target_` node, letting the target's own errors (with their messages for
    the user) propagate instead of Hydra's wrapper."""
    from hydra.utils import instantiate

    return instantiate(node, _partial_=True)(**kwargs)
