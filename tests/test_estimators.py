"""Probes as estimators: whitening that does not amplify near-null directions, moments over
the fit positions only."""

from __future__ import annotations

import numpy as np

from memsig.probes.loader import PositionBatches
from memsig.probes.moments import fit_moments
from memsig.probes.multi_offset import WHITENING_SHRINKAGE, whitening


def test_whitening_is_shrunk_and_drops_null_directions():
    """Against a closed form: (C + s mean(eigenvalues) I)^(-1/2) on the directions with
    variance, zero on the null direction; a rare direction (variance 1e-6 of the others) is
    amplified at most 1/sqrt(s mean eigenvalue), not 1000x."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    values = np.array([2.0, 1.0, 1e-6, 0.0])
    cov = (basis * values) @ basis.T
    got = whitening(cov).double().numpy()
    floor = WHITENING_SHRINKAGE * values[:3].mean()
    scale = np.array([*(1 / np.sqrt(values[:3] + floor)), 0.0])
    np.testing.assert_allclose(got, (basis * scale) @ basis.T, atol=1e-5)
    assert np.abs(got @ basis[:, 2]).max() <= 1 / np.sqrt(floor) + 1e-3
    np.testing.assert_allclose(got @ basis[:, 3], 0.0, atol=1e-5)


def test_fit_moments_leave_out_rows_outside_the_fit_positions():
    """Padding rows (all zeros, as an n-gram window before the stream's start) outside the fit
    positions never enter the moments: the moments equal numpy's over the fit rows alone."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3)).astype(np.float32)
    x[:4] = 0.0  # padding
    tokens = rng.integers(0, 3, size=500)
    positions = np.arange(10, 400)
    data = PositionBatches({"x": x}, tokens, positions, np.array([0, 2]))
    mean, cov = fit_moments(data, {"x": 3}, batch_size=64)
    np.testing.assert_allclose(mean["x"], x[positions].mean(0), atol=1e-6)
    reference = np.cov(x[positions].astype(np.float64), rowvar=False, bias=True)
    np.testing.assert_allclose(cov["x"], reference, atol=1e-6)
