"""What each process of a distributed (DDP) run does: its share of every batch, adding the
sums each rank took over its share, whether it writes files, and waiting for rank 0 to finish
shared work (checkpoint, state and frame caches).

Every rank runs the whole pipeline (started with the run by `start_processes`, or by srun),
so code outside the trainers asks these helpers instead of assuming one process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
import torch.distributed as dist
from lightning.fabric import Fabric
from lightning.pytorch.utilities import rank_zero_only

from memsig.runtime.errors import MemsigError

T = TypeVar("T")
log = logging.getLogger(__name__)


def is_rank_zero() -> bool:
    """True in the process that writes files and logs (the only one without DDP)."""
    return rank_zero_only.rank == 0


def shard() -> tuple[int, int]:
    """(rank, world size) of the running process group, (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def start_processes(trainer: Mapping) -> None:
    """Start the DDP processes the `trainer` config asks for and join their process group, at
    the start of a run rather than at the first Lightning fit: every stage then splits its
    passes across the ranks, closed-form ones (ridge probes, moments) included. A no-op for
    one process, and in ranks Lightning or a cluster scheduler already started."""
    if shard()[1] > 1:
        return
    fabric = Fabric(
        accelerator=trainer.get("accelerator", "auto"),
        strategy=trainer.get("strategy", "auto"),
        devices=trainer.get("devices", "auto"),
        num_nodes=trainer.get("num_nodes", 1),
    )
    if fabric.world_size > 1:
        fabric.launch()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over the ranks in place (and return it): the total of sums each rank took
    over its share of a pass. Unchanged outside a process group."""
    if shard()[1] == 1:
        return tensor
    if dist.get_backend() == "nccl" and not tensor.is_cuda:  # NCCL reduces GPU tensors only
        tensor.copy_(all_reduce_sum(tensor.cuda()))
    else:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if shard()[1] > 1:
        dist.barrier()


def rank_zero_first(
    work: Callable[[], T], ready: Callable[[], T | None], timeout: float, what: str
) -> T:
    """Rank 0 does `work` (e.g. writes the state cache); the other ranks wait for it and then
    read the result with `ready`. Without a process group (ranks started outside any launcher
    memsig knows), they poll `ready` until it answers or `timeout` seconds pass."""
    if is_rank_zero():
        result = work()
        barrier()
        return result
    barrier()
    log.info("rank %d reads %s written by rank 0", rank_zero_only.rank, what)
    deadline = time.monotonic() + timeout
    while (result := ready()) is None:
        if time.monotonic() > deadline:
            raise MemsigError(
                f"rank {rank_zero_only.rank} waited {timeout:.0f} s for rank 0's shared files "
                "and none appeared: check rank 0's log, and that the run dir is on a "
                "filesystem every node sees"
            )
        time.sleep(1.0)
    return result
