"""`memsig audit` as a user runs it, and the scikit-learn reference it uses. The conformance
of every view kind (tiny real runs against this reference within 0.01 accuracy and 0.03 bits)
is in test_conformance_pending_probe_fit.py until memsig's probes meet it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import run_command
from memsig.probes.reference import fit_reference, score_reference


def flagged_rows(stdout: str) -> set[tuple[str, int]]:
    """(view, offset) of every row the audit table marks FAIL."""
    rows = [line.split() for line in stdout.splitlines() if line.rstrip().endswith("FAIL")]
    return {(row[0], int(row[1])) for row in rows}


def test_audit_command_catches_a_tampered_signature(tiny_lstm_run, tmp_path):
    honest = run_command(["audit", str(tiny_lstm_run)], timeout=300)
    assert honest.returncode in (0, 1), honest.stderr
    assert "view x offset gaps" in honest.stdout

    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_lstm_run, tampered)
    path = tampered / "signature.json"
    stored = json.loads(path.read_text())
    stored["views"]["layer1.c"]["accuracy"][4] += 0.05  # numbers the states do not support
    stored["views"]["logits"]["xent_bits"][3] -= 0.1
    path.write_text(json.dumps(stored))
    caught = run_command(["audit", str(tampered)], timeout=300)
    assert caught.returncode == 1, caught.stdout + caught.stderr
    # exactly the tampered rows join whatever the honest signature's audit flags
    expected = flagged_rows(honest.stdout) | {("layer1.c", 4), ("logits", 3)}
    assert flagged_rows(caught.stdout) == expected
    assert f"{len(expected)} of 21 view x offset gaps too large" in caught.stdout


def test_audit_refuses_a_run_dir_without_caches(tiny_lstm_run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("signature.json", "config.yaml"):
        shutil.copy(tiny_lstm_run / name, bare / name)
    result = run_command(["audit", str(bare)], timeout=300)
    assert result.returncode == 2
    assert "holds no state cache of this run's model and data" in result.stderr


def test_reference_gives_a_symbol_unseen_in_fitting_its_prior_mass():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = (x[:, 0] > 0).astype(int)  # classes 0 and 1 only; class 2 never seen in fitting
    test_y = np.array([0, 1, 2, 2])
    score = score_reference([x[:200], x[200:], x[:4]], [y[:200], y[200:], test_y], 3)
    prior_2 = 1 / (200 + 3)  # add-one prior of class 2 over the 200 fit targets
    scaler, model, c, _ = fit_reference(x[:200], y[:200], x[200:], y[200:], 3)
    assert c == score.c
    seen = model.predict_proba(scaler.transform(x[:2]))[[0, 1], test_y[:2]] * (1 - prior_2)
    expected = -(np.log2(seen).sum() + 2 * np.log2(prior_2)) / 4
    assert score.xent_bits == pytest.approx(expected, rel=1e-9)
