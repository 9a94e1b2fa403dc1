"""Online code length (minimum description length) of a probe's targets, per view x offset.

The online code (Voita & Titov, 2020) transmits the targets of the probe-train positions block
by block: the first block with a uniform code (log2 of the number of symbols per target); every
later block with a probe trained on all blocks before it. Block i ends at fraction
`schedule[i]` of the positions (contiguous, in stream order), so the code length counts how
much data a probe needs as well as how well it ends up decoding: the shorter, the more
readily the state holds the information.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from memsig.extraction.loader import PositionBatches
from memsig.probes.fit import ProbeSetup, fit_and_test
from memsig.runtime.errors import ConfigError

if TYPE_CHECKING:  # the context module imports the measures' types
    from memsig.measures.context import MeasureContext


def block_ends(positions: int, schedule: Sequence[float]) -> list[int]:
    """Where each block ends (counts of positions), from increasing fractions ending at 1."""
    fractions = list(schedule)
    increasing = all(0 < a < b for a, b in zip(fractions, fractions[1:], strict=False))
    if len(fractions) < 2 or fractions[-1] != 1 or not increasing or fractions[0] <= 0:
        raise ConfigError(
            f"probe.mdl_schedule={fractions}: must be at least two increasing fractions in "
            "(0, 1] ending at 1 (e.g. [0.1,0.2,0.4,0.8,1.0])"
        )
    ends = [int(round(f * positions)) for f in fractions]
    if ends[0] < 1 or any(a >= b for a, b in zip(ends, ends[1:], strict=False)):
        raise ConfigError(
            f"probe.mdl_schedule={fractions} gives empty blocks over {positions} probe-train "
            "positions: use larger first fractions or more probe-train data"
        )
    return ends


def online_code_bits(
    first_block: int, num_classes: int, block_sizes: Sequence[int], block_xent_bits: Sequence
) -> np.ndarray:
    """Total code length in bits: the first block uniformly coded (log2 num_classes per
    target), then each later block's size times its mean cross-entropy (bits, any shape, e.g.
    [views, offsets]) under the probe trained on the blocks before it."""
    later = sum(
        size * np.asarray(xent, dtype=np.float64)
        for size, xent in zip(block_sizes, block_xent_bits, strict=True)
    )
    return first_block * math.log2(num_classes) + later


def online_code(
    setup: ProbeSetup, sets: tuple[PositionBatches, PositionBatches], key: list
) -> dict:
    """The online code length of the probe-train targets per view x offset: for each block
    after the first, a probe trained on the blocks before it (selection on the usual
    validation block) codes it."""
    fit, val = sets
    schedule = list(setup.cfg.probe.mdl_schedule)
    ends = block_ends(len(fit), schedule)
    sizes, xents = [], []
    for i, (start, stop) in enumerate(zip(ends, ends[1:], strict=False)):
        seen, coded = (
            fit.replaced(positions=fit.positions[a:b]) for a, b in ((0, start), (start, stop))
        )
        run = fit_and_test(setup, (seen, val, coded), [*key, "mdl", i])
        sizes.append(stop - start)
        xents.append(run.results["xent_bits"].numpy())
    total = online_code_bits(ends[0], setup.num_classes, sizes, xents)
    return {
        "schedule": schedule,
        "block_ends": ends,
        "positions": len(fit),
        "uniform_bits": len(fit) * math.log2(setup.num_classes),
        "views": {
            v: {
                "online_code_bits": total[i].tolist(),
                "online_code_bits_per_token": (total[i] / len(fit)).tolist(),
            }
            for i, v in enumerate(setup.views)
        },
    }


def measure(context: MeasureContext) -> dict:
    """`mdl` (probe.mdl): the online code length per view x offset."""
    if not context.cfg.probe.mdl:
        return {}
    fit, val, _ = context.sets
    return {"mdl": online_code(context.setup, (fit, val), context.key)}
