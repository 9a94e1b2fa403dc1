"""Where the configs live, and the resolvers they use."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"

if not OmegaConf.has_resolver("memsig_root"):
    OmegaConf.register_new_resolver("memsig_root", lambda: str(PROJECT_ROOT))
