"""The `memsig` command and run.py: compose the Hydra config and run the pipeline."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from memsig.config import CONFIG_DIR
from memsig.errors import MemsigError

log = logging.getLogger("memsig")


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Run the stages; returns the mean capacity over views (the value a sweeper optimises)."""
    from memsig.pipeline import run

    try:
        signature = run(cfg)
    except MemsigError as err:
        log.error("%s", err)
        print(f"memsig: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if signature is None:
        return None
    return sum(s.capacity for s in signature.views.values()) / len(signature.views)
