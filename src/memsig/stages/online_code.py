"""The online code length of a signature (`probe.mdl=true`, probes/mdl.py): one probe of the
configured kind per block, trained on the blocks before it."""

from __future__ import annotations

import math

from memsig.probes.factory import ProbeSetup, fit_and_test
from memsig.probes.loader import PositionBatches
from memsig.probes.mdl import block_ends, online_code_bits


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
