"""An independent reference probe: scikit-learn's LogisticRegression on standardised states,
its inverse L2 strength C chosen on the validation block.

memsig's probes are its own code (whitening, fused heads, early stopping); this one shares
none of it, so agreement between the two on the same positions and targets says the numbers
come from the states and not from how memsig fits them (`memsig audit`, the conformance
tests).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from memsig.probes.baselines import class_prior

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)  # inverse L2 strengths, weakest last
MAX_ITER = 1000  # L-BFGS iterations per fit


@dataclass(frozen=True)
class ReferenceScore:
    """One view x offset: test accuracy and cross-entropy, the chosen C, and whether its
    fit converged within MAX_ITER."""

    accuracy: float
    xent_bits: float
    c: float
    converged: bool


def fit_reference(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    num_classes: int,
    grid: Sequence[float] = C_GRID,
    start: float | None = None,
) -> tuple[StandardScaler, LogisticRegression | None, float, bool]:
    """The scaler, the model with the best validation cross-entropy, its C and convergence.

    The search starts at `start` (default: the grid's middle; a neighbouring offset's C saves
    fits) and walks the grid up, then down, while validation cross-entropy improves, each fit
    starting from the last one's weights. With fewer than two classes among the fit targets
    there is nothing to fit: the model is None (the class prior)."""
    scaler = StandardScaler().fit(x_fit)
    if len(np.unique(y_fit)) < 2:
        return scaler, None, float("nan"), True
    grid = sorted(grid)
    x_fit, x_val = scaler.transform(x_fit), scaler.transform(x_val)
    prior = class_prior(y_fit[:, None], num_classes)[0]
    model = LogisticRegression(max_iter=MAX_ITER, warm_start=True)
    fitted: dict[int, tuple[float, LogisticRegression]] = {}

    def val_xent(i: int) -> float:
        if i not in fitted:
            model.set_params(C=grid[i])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(x_fit, y_fit)
            xent = _xent_bits(_log_probs(model, x_val, prior), y_val)
            fitted[i] = (xent, copy.deepcopy(model))
        return fitted[i][0]

    first = (
        len(grid) // 2 if start is None else int(np.argmin(np.abs(np.log(grid) - np.log(start))))
    )
    best = first
    for step in (1, -1):
        while 0 <= best + step < len(grid) and val_xent(best + step) < val_xent(best):
            best += step
    chosen = fitted[best][1]
    return scaler, chosen, grid[best], bool(chosen.n_iter_.max() < MAX_ITER)


def score_reference(
    states: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    num_classes: int,
    grid: Sequence[float] = C_GRID,
    start: float | None = None,
) -> ReferenceScore:
    """Fit on the fit block, choose C on the validation block (search from `start`), score on
    the test block: `states` and `targets` hold the three blocks in that order."""
    (x_fit, x_val, x_test), (y_fit, y_val, y_test) = states, targets
    scaler, model, c, converged = fit_reference(
        x_fit, y_fit, x_val, y_val, num_classes, grid, start
    )
    prior = class_prior(y_fit[:, None], num_classes)[0]
    if model is None:
        log_p = np.broadcast_to(np.log(prior), (len(y_test), num_classes))
    else:
        log_p = _log_probs(model, scaler.transform(x_test), prior)
    accuracy = float(np.mean(log_p.argmax(1) == y_test))
    return ReferenceScore(accuracy, _xent_bits(log_p, y_test), c, converged)


def _log_probs(model: LogisticRegression, x: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Natural-log probabilities over all classes [n, num_classes]: a class absent from the
    fit targets keeps its add-one prior mass (a symbol never seen in fitting is not
    impossible), the fitted classes share the rest."""
    unseen = np.ones(len(prior), dtype=bool)
    unseen[model.classes_] = False
    log_p = np.empty((len(x), len(prior)))
    log_p[:, unseen] = np.log(prior[unseen])
    log_p[:, model.classes_] = model.predict_log_proba(x) + np.log1p(-prior[unseen].sum())
    return log_p


def _xent_bits(log_p: np.ndarray, targets: np.ndarray) -> float:
    return float(-np.mean(log_p[np.arange(len(targets)), targets]) / np.log(2))
