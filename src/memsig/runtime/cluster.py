"""The cluster layout rule, checked before any job of a sweep is submitted.

Lightning's DDP on SLURM runs one process per GPU, each started by SLURM: a job must ask for
as many tasks per node as GPUs per node, and the trainer must use that many devices on that
many nodes. A sweep that breaks the rule would queue, wait, and fail on the cluster; here it
fails at once, naming the keys to change."""

from __future__ import annotations

from collections.abc import Mapping

from memsig.runtime.errors import ConfigError


def check_layout(launcher: Mapping, trainer: Mapping) -> None:
    """tasks_per_node == gpus_per_node (when GPUs are requested) == trainer.devices, and
    nodes == trainer.num_nodes."""
    tasks, gpus = launcher.get("tasks_per_node", 1), launcher.get("gpus_per_node")
    if gpus and tasks != gpus:
        raise ConfigError(
            f"hydra.launcher.tasks_per_node={tasks} but hydra.launcher.gpus_per_node={gpus}: "
            "Lightning DDP runs one task per GPU, so set both to the same number "
            f"(e.g. hydra.launcher.tasks_per_node={gpus})"
        )
    devices = trainer.get("devices", 1)
    if devices != tasks:
        raise ConfigError(
            f"trainer.devices={devices} but hydra.launcher.tasks_per_node={tasks}: each task "
            f"drives one device, so set trainer.devices={tasks} (or change the launcher)"
        )
    nodes, num_nodes = launcher.get("nodes", 1), trainer.get("num_nodes", 1)
    if nodes != num_nodes:
        raise ConfigError(
            f"hydra.launcher.nodes={nodes} but trainer.num_nodes={num_nodes}: set both to "
            "the number of nodes the job spans"
        )


def check_local_ddp_in_sweep(trainer: Mapping, in_sweep: bool) -> None:
    """Lightning starts local DDP processes by re-running the command line, which in a sweep
    job would re-run the whole sweep in every process: refuse it before any work."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    devices = trainer.get("devices", 1)
    several = isinstance(devices, int) and devices * trainer.get("num_nodes", 1) > 1
    started_outside = SLURMEnvironment.detect() or TorchElasticEnvironment.detect()
    if in_sweep and several and not started_outside:
        raise ConfigError(
            f"trainer.devices={trainer.get('devices')} in a sweep on this machine: Lightning "
            "would start each DDP process by re-running the whole sweep; run DDP sweeps with "
            "hydra/launcher=slurm (SLURM starts the processes), or DDP runs one at a time "
            "without -m"
        )
