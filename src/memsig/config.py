"""Where the configs live, and the resolvers they use."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"

if not OmegaConf.has_resolver("memsig_root"):
    OmegaConf.register_new_resolver("memsig_root", lambda: str(PROJECT_ROOT))


def build(node, **kwargs):
    """Instantiate a `_target_` node, letting the target's own errors (with their messages for
    the user) propagate instead of Hydra's wrapper."""
    from hydra.utils import instantiate

    return instantiate(node, _partial_=True)(**kwargs)
