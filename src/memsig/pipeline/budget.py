"""Sizes estimated before any work, so that a run the machine cannot hold is refused at once
instead of after hours: the probe heads' memory (they grow with the vocabulary squared through
the `logits` view) and the disk the checkpoints and the state cache will take."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from memsig.extraction.state_cache import check_free_space
from memsig.runtime.errors import ConfigError

FLOAT = 4  # bytes of a float32
# probe training holds, per head parameter: the weights, their gradient, Adam's two moments and
# the best epoch's copy; a probe's resume checkpoint holds all but the gradient, and exists
# twice while the next one is written (a temporary file, then renamed)
PROBE_TRAINING_COPIES = 5
PROBE_CHECKPOINT_COPIES = 4
# base training: base.ckpt and best.ckpt (weights), last.ckpt (weights and Adam's moments) and
# the temporary file last.ckpt is written to
BASE_CHECKPOINT_COPIES = 1 + 1 + 3 + 3


def probe_parameters(view_dims: Mapping[str, int], heads: int, classes: int) -> int:
    """Weights and biases of the linear heads (offsets x L2 strengths) of every view."""
    return sum((dim + 1) * heads * classes for dim in view_dims.values())


def probe_memory_bytes(
    view_dims: Mapping[str, int], heads: int, classes: int, batch_size: int
) -> int:
    """Probe training's parameters (with gradients, optimizer state and best copy) and one
    batch of logits with their gradient."""
    params = probe_parameters(view_dims, heads, classes)
    logits = 2 * batch_size * heads * classes * len(view_dims)
    return FLOAT * (PROBE_TRAINING_COPIES * params + logits)


def check_vocabulary(
    classes: int,
    limit: int,
    data: str,
    view_dims: Mapping[str, int],
    heads: int,
    batch_size: int,
) -> None:
    """Refuse a vocabulary above `max_vocab`, with the memory its probes would need."""
    if classes <= limit:
        return
    need = probe_memory_bytes(view_dims, heads, classes, batch_size)
    disk = FLOAT * PROBE_CHECKPOINT_COPIES * probe_parameters(view_dims, heads, classes)
    raise ConfigError(
        f"data={data} has {classes} symbols, more than max_vocab={limit}: probing "
        f"{len(view_dims)} views at {heads} heads (offsets x L2 strengths) would take about "
        f"{need / 2**30:.1f} GiB of memory and {disk / 2**30:.1f} GiB per probe checkpoint. "
        f"If the machine has that, raise the limit (max_vocab={classes}); or map rare symbols "
        "to fewer classes, or probe fewer views (probe.views=[...], e.g. without logits), "
        "offsets or probe.l2 strengths"
    )


def check_disk_for_run(
    run_dir: Path,
    base_parameters: int | None,
    view_dims: Mapping[str, int],
    heads: int,
    classes: int,
    cache_positions: int,
    cache_itemsize: int,
) -> None:
    """Refuse a run whose checkpoints (the base model's when it is trained here, one probe's
    and its temporary successor) and state cache the disk cannot hold, before training."""
    base = FLOAT * BASE_CHECKPOINT_COPIES * (base_parameters or 0)
    probe = 2 * FLOAT * PROBE_CHECKPOINT_COPIES * probe_parameters(view_dims, heads, classes)
    cache = cache_positions * sum(view_dims.values()) * cache_itemsize
    check_free_space(
        run_dir,
        base + probe + cache,
        what=(
            f"this run (checkpoints {(base + probe) / 2**30:.2f} GiB, state cache "
            f"{cache / 2**30:.2f} GiB)"
        ),
        fixes="or choose a run dir on a larger disk (hydra.run.dir=PATH)",
    )
