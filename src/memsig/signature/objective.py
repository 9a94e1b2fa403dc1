"""The single number a run returns to Hydra, which a sweeper (Optuna) optimises."""

from __future__ import annotations

from memsig.runtime.errors import ConfigError
from memsig.signature.record import Signature

METRICS = ("capacity", "accuracy", "val/bpc")


def check_objective(metric: str, view: str | None, views: list[str]) -> None:
    """Refuse an objective the run cannot produce, before any work."""
    if metric not in METRICS:
        raise ConfigError(
            f"objective.metric={metric}: must be one of {', '.join(METRICS)} "
            "(e.g. objective.metric=capacity)"
        )
    if view is not None and view not in views:
        raise ConfigError(
            f"objective.view={view} is not a probed view; choose one of {views} "
            "or objective.view=null (mean over views)"
        )


def objective(signature: Signature, metric: str, view: str | None) -> float:
    """capacity: the view's capacity (mean over views when view is None); accuracy: mean
    accuracy over offsets k >= 0; val/bpc: the base model's validation bits per character."""
    if metric == "val/bpc":
        return float(signature.model["metrics"]["val/bpc"])
    views = [view] if view is not None else list(signature.views)
    past = [i for i, k in enumerate(signature.offsets) if k >= 0]
    if metric == "capacity":
        values = [signature.views[v].capacity for v in views]
    else:
        values = [sum(signature.views[v].accuracy[i] for i in past) / len(past) for v in views]
    return float(sum(values) / len(values))
