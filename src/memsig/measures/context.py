"""The interface every measure of a signature implements, and the measures a run computes.

A measure is a function `measure(context) -> dict`: it reads what the signature stage has
built (`MeasureContext`) and returns the entries it adds to `signature.json` (its key and
record), or nothing when its `probe.*` switch is off. The config's `measures` list names
them, in the order they run: adding one is a module with such a function and a line there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hydra.utils import get_method
from omegaconf import DictConfig

from memsig.data.corpus import Corpus
from memsig.data.speech import SpeechCorpus
from memsig.measures.conditioning import Conditioning
from memsig.probes.fit import FittedProbe, ProbeSetup, Sets
from memsig.runtime.errors import ConfigError
from memsig.signature.record import Signature


@dataclass
class MeasureContext:
    """What the signature stage has built once the signature's own probe is tested."""

    cfg: DictConfig
    setup: ProbeSetup  # config, run dir, heads' input widths, classes, device
    sets: Sets  # fit, validation and test positions
    key: list  # resume key of the signature's probe; a measure's own probes extend it
    documents: np.ndarray | None  # bootstrap document of every test position; None: no intervals
    fitted: FittedProbe  # the signature's probe, tested
    signature: Signature  # the signature so far: `extra` grows measure by measure
    corpus: Corpus | SpeechCorpus
    run_dir: Path
    payload: dict  # the base checkpoint
    identity: dict  # what the state cache is made from
    conditioning: Conditioning
    shared: dict = field(default_factory=dict)  # what a measure leaves for later ones


Measure = Callable[[MeasureContext], dict]


def configured_measures(paths: Iterable[str]) -> list[Measure]:
    """The measure functions named by import path (the config's `measures` list)."""
    measures = []
    for path in paths:
        try:
            measures.append(get_method(path))
        except Exception as err:  # Hydra wraps import and attribute errors alike
            raise ConfigError(
                f"measures: cannot import {path!r} ({err}): name a function "
                "`module.function(context) -> dict`, e.g. memsig.measures.control.measure"
            ) from err
    return measures
