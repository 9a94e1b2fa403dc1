"""memsig's Hydra launcher plugin: submitit's SLURM launcher that checks the DDP layout of
every job (memsig.runtime.cluster.check_layout) before submitting any (`hydra/launcher=slurm`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher import submitit_launcher

from memsig.runtime.cluster import check_layout
from memsig.runtime.errors import ConfigError


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """`hydra/launcher=slurm`: one SLURM job per sweep job, one task per GPU; every job's
    config is composed and its layout checked before any job is submitted."""

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        for overrides in job_overrides:
            config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            try:
                check_layout(self.params, config.trainer)
            except ConfigError as err:
                print(f"memsig: error: {err}", file=sys.stderr)
                raise SystemExit(2) from None
        return super().launch(job_overrides, initial_job_idx)
