"""The Signature record (schema memsig/signature@1): build, save and load as JSON and CSV.

The file is strict JSON (atomic.json_text): a number that is undefined is null, its path and
the reason listed under the top-level `undefined` key (absent when every number is defined).
`data.probe_test_positions` is the number of test positions scored, summed over DDP ranks.

Keys beyond the schema's core (all optional, each written only when its option is on):

- `summary`: per view, `capacity`, `half_life` (the first offset k >= 0 whose information falls
  below half its k = 0 value; null if it never does within the offsets, or without k = 0) and
  `last_significant_offset` (the largest k >= 0 whose information interval lies above zero;
  null without intervals or when none does).
- `health` (always): where the numbers are probe artefacts rather than memory (health.py):
  `ok`, `noise` (how noise was judged), `below_prior` (view x offset whose information lies
  below zero beyond noise), `below_majority` (accuracy below the majority baseline beyond
  noise) and `too_little_data` (views whose heads have more weights than fit positions).
- `intervals` (`probe.bootstrap.resamples` > 0): bootstrap over probe-test documents;
  `level`, `resamples`, `documents`, `block_chars`, and per view the per-offset lists
  `accuracy_lo/hi`, `info_bits_lo/hi` (`selectivity_lo/hi` with control tasks) and the pairs
  `capacity`, `half_life` ([lo, hi]).
- `control` (`probe.control=true`): `labels` (per offset, the control label of each symbol),
  `baseline` (`majority_accuracy` per offset of the control labels) and per view the
  per-offset `accuracy` (control task), `selectivity` (accuracy - control accuracy) and
  `selectivity_above_chance` (the same with each accuracy less its majority baseline).
- `untrained` (`probe.untrained_baseline=true`): the same architecture with random weights,
  probed the same way: `path` (its own signature.json) and `views` (as in `views`).
- `mdl` (`probe.mdl=true`): the online code: `schedule`, `block_ends`, `positions`,
  `uniform_bits` (the targets coded without the state) and per view the per-offset
  `online_code_bits` (total) and `online_code_bits_per_token` (next to `xent_bits`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from memsig.runtime.atomic import write_csv_atomic, write_json_atomic
from memsig.runtime.errors import MemsigError
from memsig.runtime.faults import fault_point

SCHEMA = "memsig/signature@1"
PER_OFFSET_METRICS = ("accuracy", "xent_bits", "info_bits")
BASELINE_METRICS = ("majority_accuracy", "prior_entropy_bits")
PER_VIEW_PAIRS = ("capacity", "half_life")  # [lo, hi] in `intervals`


def capacity(offsets: Sequence[int], info_bits, prior_bits):
    """Sum over past offsets (k >= 0) of the fraction of the prior entropy the state recovers.
    The last axis of `info_bits` and `prior_bits` is the offset, so bootstrap replicates
    [resamples, offsets] give one capacity each; plain lists give a float."""
    info, prior = np.asarray(info_bits, dtype=np.float64), np.asarray(prior_bits, np.float64)
    counted = (np.asarray(offsets) >= 0) & (prior > 0)
    fraction = np.maximum(info, 0.0) / np.where(prior > 0, prior, 1.0)
    total = np.where(counted, fraction, 0.0).sum(-1)
    return float(total) if total.ndim == 0 else total


def half_life(offsets: Sequence[int], info_bits) -> np.ndarray | float | None:
    """The first offset k >= 0 (in increasing order) whose information falls below half its
    k = 0 value; inf where it never does; None without offset 0. Last axis: offsets."""
    offsets = list(offsets)
    if 0 not in offsets:
        return None
    info = np.asarray(info_bits, dtype=np.float64)
    past = sorted(k for k in offsets if k >= 0)
    curve = info[..., [offsets.index(k) for k in past]]
    below = curve < curve[..., :1] / 2.0
    first = np.where(below.any(-1), np.asarray(past)[below.argmax(-1)], np.inf)
    return float(first) if first.ndim == 0 else first


def zip_offsets(view: str, metric: str, offsets: Sequence[int], values: Sequence) -> list:
    """Long-form rows of one per-offset list."""
    return [(view, k, metric, v) for k, v in zip(offsets, values, strict=True)]


def json_number(value: float | None) -> float | int | None:
    """A number for JSON: None for missing or infinite, int when whole."""
    if value is None or not math.isfinite(value):
        return None
    return int(value) if float(value).is_integer() else float(value)


@dataclass
class ViewScores:
    """One view's scores, one value per offset."""

    dim: int
    accuracy: list[float]
    xent_bits: list[float]
    info_bits: list[float]
    capacity: float

    @classmethod
    def from_scores(
        cls,
        dim: int,
        offsets: Sequence[int],
        accuracy: Sequence[float],
        xent_bits: Sequence[float],
        prior_entropy_bits: Sequence[float],
    ) -> ViewScores:
        info = [p - x for p, x in zip(prior_entropy_bits, xent_bits, strict=True)]
        return cls(
            dim=int(dim),
            accuracy=[float(a) for a in accuracy],
            xent_bits=[float(x) for x in xent_bits],
            info_bits=info,
            capacity=capacity(offsets, info, prior_entropy_bits),
        )


@dataclass
class Signature:
    """A model's memory signature: scores per view x offset, with baselines and provenance."""

    model: dict
    data: dict
    probe: dict
    offsets: list[int]
    baseline: dict
    views: dict[str, ViewScores]
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {
            "schema": SCHEMA,
            "model": self.model,
            "data": self.data,
            "probe": self.probe,
            "offsets": list(self.offsets),
            "baseline": self.baseline,
            "views": {v: vars(s).copy() for v, s in self.views.items()},
        }
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping) -> Signature:
        if raw.get("schema") != SCHEMA:
            raise MemsigError(
                f"not a memsig signature: schema is {raw.get('schema')!r}, expected {SCHEMA!r}"
            )
        known = {"schema", "model", "data", "probe", "offsets", "baseline", "views"}
        return cls(
            model=dict(raw["model"]),
            data=dict(raw["data"]),
            probe=dict(raw["probe"]),
            offsets=list(raw["offsets"]),
            baseline=dict(raw["baseline"]),
            views={v: ViewScores(**s) for v, s in raw["views"].items()},
            extra={k: v for k, v in raw.items() if k not in known},
        )

    def rows(self) -> list[tuple[str, int | str, str, float | None]]:
        """Long form: (view, offset, metric, value). The baselines come first as view
        `baseline` (`majority_accuracy`, `prior_entropy_bits`); per-offset lists of the
        optional keys follow as `<key>.<metric>` (untrained views as `untrained.<metric>`);
        per-view numbers of `summary` and the [lo, hi] pairs of `intervals` have an empty
        offset."""
        out = []
        for metric in BASELINE_METRICS:
            out.extend(zip_offsets("baseline", metric, self.offsets, self.baseline[metric]))
        for view, scores in self.views.items():
            for metric in PER_OFFSET_METRICS:
                out.extend(zip_offsets(view, metric, self.offsets, getattr(scores, metric)))
        for key in ("control", "intervals", "mdl", "untrained"):
            for view, metrics in self.extra.get(key, {}).get("views", {}).items():
                for metric, values in metrics.items():
                    name = f"{key}.{metric}"
                    if not isinstance(values, list):
                        continue
                    if metric in PER_VIEW_PAIRS:
                        ends = zip(("lo", "hi"), values, strict=True)
                        out.extend((view, "", f"{name}_{end}", v) for end, v in ends)
                    else:
                        out.extend(zip_offsets(view, name, self.offsets, values))
        for view, numbers in self.extra.get("summary", {}).items():
            out.extend((view, "", metric, value) for metric, value in numbers.items())
        return out

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write signature.csv then signature.json (last: its presence means complete),
        each atomically; returns their paths."""
        directory = Path(directory)
        json_path, csv_path = directory / "signature.json", directory / "signature.csv"
        write_csv_atomic(csv_path, ["view", "offset", "metric", "value"], self.rows())
        fault_point("signature_file")
        write_json_atomic(json_path, self.to_dict())
        return json_path, csv_path

    @classmethod
    def load(cls, path: Path) -> Signature:
        path = Path(path)
        if path.is_dir():
            path = path / "signature.json"
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError as err:
            raise MemsigError(
                f"no signature at {path}: run the signature stage there first"
            ) from err
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise MemsigError(f"{path} is not a valid memsig signature ({err})") from err


def view_scores(
    views: Mapping[str, int], offsets: Sequence[int], results: Mapping, baseline: Mapping
) -> dict[str, ViewScores]:
    """Each view's scores from a probe's test results (accuracy, xent_bits: [views, offsets])."""
    return {
        v: ViewScores.from_scores(
            d,
            offsets,
            results["accuracy"][i].tolist(),
            results["xent_bits"][i].tolist(),
            baseline["prior_entropy_bits"],
        )
        for i, (v, d) in enumerate(views.items())
    }
