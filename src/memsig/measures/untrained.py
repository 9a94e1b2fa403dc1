"""The untrained baseline of a signature (`probe.untrained_baseline=true`): the same
architecture with random weights, probed exactly as the trained one."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from memsig.data.corpus import Corpus
from memsig.extraction.probe_parts import position_sets, probe_parts
from memsig.extraction.state_cache import ExtractSettings
from memsig.models.checkpoint import initial_network
from memsig.models.factorized import with_basis_ablations
from memsig.probes.fit import ProbeSetup, fit_and_test
from memsig.runtime.distributed import is_rank_zero
from memsig.signature.record import Signature, view_scores
from memsig.signature.summary import summarise

if TYPE_CHECKING:  # the context module imports the measures' types
    from memsig.measures.context import MeasureContext


def untrained_signature(
    setup: ProbeSetup,
    corpus: Corpus,
    run_dir: Path,
    payload: dict,
    identity: dict,
    trained: Signature,
) -> dict:
    """Probe the network initialised as base training initialises it (from `seed`); its own
    signature goes to untrained/, its views into the trained signature's `untrained` key."""
    cfg = setup.cfg
    net = with_basis_ablations(
        initial_network(payload["model"], len(payload["vocab"]), cfg.seed).eval(),
        cfg.probe.get("ablate_bases", False),
    ).to(setup.device)
    identity = {
        **identity,
        "checkpoint_sha256": f"untrained-seed{cfg.seed}",
        "model": payload["model"],
    }
    parts = probe_parts(
        net,
        corpus,
        identity,
        ExtractSettings(**cfg.probe.extract),
        trained.offsets,
        run_dir / "cache" / "untrained",
        setup.device,
    )
    sets = position_sets(parts, trained.offsets, cfg.probe.val_fraction)
    untrained_setup = dataclasses.replace(  # the signature's views (no derived heads)
        setup, views={v: setup.views[v] for v in trained.views}
    )
    run = fit_and_test(
        untrained_setup, sets, [identity, trained.probe["config"], trained.offsets, "untrained"]
    )
    signature = Signature(
        model={**trained.model, "name": f"{trained.model['name']} (untrained)", "metrics": {}},
        data=trained.data,
        probe={**trained.probe, "epochs": run.epochs, **run.record},
        offsets=trained.offsets,
        baseline=trained.baseline,
        views=view_scores(untrained_setup.views, trained.offsets, run.results, trained.baseline),
    )
    signature.extra["summary"] = summarise(signature)
    if is_rank_zero():  # every DDP rank holds the same numbers; one writes them
        directory = run_dir / "untrained"
        directory.mkdir(exist_ok=True)
        signature.save(directory)
    return {
        "path": "untrained/signature.json",
        "views": {v: vars(s).copy() for v, s in signature.views.items()},
    }


def measure(context: MeasureContext) -> dict:
    """`untrained` (probe.untrained_baseline): the untrained network's views."""
    if not context.cfg.probe.untrained_baseline:
        return {}
    record = untrained_signature(
        context.setup,
        context.corpus,
        context.run_dir,
        context.payload,
        context.identity,
        context.signature,
    )
    return {"untrained": record}
