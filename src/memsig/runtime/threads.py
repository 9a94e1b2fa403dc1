"""The number of torch CPU threads a run uses when `threads` is null.

torch's own default is one thread per core, in every process: on a machine that others (or the
run's own DDP processes) also use, the threads compete for the cores and a small recurrent
model trains several times slower per unit of work than with one thread. The default here is
half of the cores this process may use (its CPU affinity and cgroup quota, shared among the
processes a node runs: `trainer.devices`, or SLURM's `--cpus-per-task` for each), at least 1
and at most 4: small models gain little from more, and the other half is left for the data
pipeline, the logger and other users. It depends only on the machine and the config, never on
the load of the moment, so the same command on the same machine always uses the same number
of threads (results can depend on it in the last bits). OMP_NUM_THREADS, when set, wins."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

MAX_DEFAULT_THREADS = 4
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores(cgroup_cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return max(1, cores or 1)
    if quota != "max":
        cores = min(cores or 1, math.ceil(int(quota) / int(period)))
    return max(1, cores or 1)


def processes_per_node(trainer: Mapping) -> int:
    """How many processes of the run share a node: one per device."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, int) and devices >= 1:
        return devices
    if isinstance(devices, list | tuple):
        return max(1, len(devices))
    import torch  # devices="auto" or -1: every GPU of the node, else one process

    return max(1, torch.cuda.device_count())


def default_threads(cores: int, processes: int, cpus_per_task: int | None = None) -> int:
    """Half of each process's share of the cores (SLURM's cpus per task when given), in
    [1, MAX_DEFAULT_THREADS]."""
    share = cpus_per_task if cpus_per_task else cores // max(1, processes)
    return max(1, min(MAX_DEFAULT_THREADS, share // 2))


def torch_threads(
    setting: int | None, trainer: Mapping, env: Mapping[str, str] = os.environ
) -> tuple[int, str]:
    """The thread count for a run's `threads` setting, and where it came from."""
    if setting:
        return int(setting), f"threads={setting}"
    if env.get("OMP_NUM_THREADS", "").isdigit() and int(env["OMP_NUM_THREADS"]) >= 1:
        return int(env["OMP_NUM_THREADS"]), f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}"
    cores, processes = usable_cores(), processes_per_node(trainer)
    slurm = env.get("SLURM_CPUS_PER_TASK", "")
    per_task = int(slurm) if slurm.isdigit() else None
    share = f"{per_task} cpus per SLURM task" if per_task else f"{cores} cores / {processes}"
    chosen = default_threads(cores, processes, per_task)
    return chosen, f"threads=null: half of {share}, in [1, {MAX_DEFAULT_THREADS}]"
