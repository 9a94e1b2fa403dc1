"""The Signature record (schema memsig/signature@1): build, save and load as JSON and CSV."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from memsig.atomic import write_csv_atomic, write_json_atomic
from memsig.errors import MemsigError

SCHEMA = "memsig/signature@1"
PER_OFFSET_METRICS = ("accuracy", "xent_bits", "info_bits")


def capacity(
    offsets: Sequence[int], info_bits: Sequence[float], prior_bits: Sequence[float]
) -> float:
    """Sum over past offsets (k >= 0) of the fraction of the prior entropy the state recovers."""
    return float(
        sum(
            max(0.0, info) / prior
            for k, info, prior in zip(offsets, info_bits, prior_bits, strict=True)
            if k >= 0 and prior > 0
        )
    )


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

    def rows(self) -> list[tuple[str, int, str, float]]:
        """Long form: (view, offset, metric, value)."""
        out = []
        for view, scores in self.views.items():
            for metric in PER_OFFSET_METRICS:
                for k, value in zip(self.offsets, getattr(scores, metric), strict=True):
                    out.append((view, k, metric, value))
        return out

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write signature.json and signature.csv atomically; returns their paths."""
        directory = Path(directory)
        json_path, csv_path = directory / "signature.json", directory / "signature.csv"
        write_json_atomic(json_path, self.to_dict())
        write_csv_atomic(csv_path, ["view", "offset", "metric", "value"], self.rows())
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
