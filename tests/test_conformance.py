"""Conformance: every kind of view, in a tiny real run, against scikit-learn's LogisticRegression
(C chosen on validation) fitted on the same positions, split and targets (memsig.audit):
accuracy within 0.01 and cross-entropy within 0.03 bits at every offset. And `memsig audit`
as a user runs it: it passes on a run and fails on a signature.json that was tampered with."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import TINY_SPEECH, compose_config, run_command
from memsig.audit import AuditRow, audit_run
from memsig.pipeline import run
from memsig.probes.reference import fit_reference, score_reference

ACCURACY_TOLERANCE = 0.01
XENT_TOLERANCE_BITS = 0.03
WHOLE_FIT_BLOCK = 10**9  # the reference fits on every fit position, as the probes do


def assert_conforms(rows: list[AuditRow], views: list[str]) -> None:
    assert sorted({r.view for r in rows}) == sorted(views)
    gaps = [
        (r.view, r.offset, round(r.accuracy_gap, 4), round(r.xent_gap, 4))
        for r in rows
        if not r.passed(ACCURACY_TOLERANCE, XENT_TOLERANCE_BITS)
    ]
    assert not gaps, f"(view, offset, accuracy gap, xent gap) beyond tolerance: {gaps}"


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    """A tiny default run: LSTM on the order-2 Markov source; views h, c and logits."""
    run_dir = tmp_path_factory.mktemp("lstm") / "run"
    run(compose_config(run_dir))
    return run_dir


def test_lstm_state_cell_and_logits_conform(lstm_run):
    rows = audit_run(lstm_run, WHOLE_FIT_BLOCK)
    assert_conforms(rows, ["layer1.h", "layer1.c", "logits"])


@pytest.mark.parametrize(
    "overrides, views",
    [
        (["model=gru"], ["layer1.h"]),
        (["model=ngram", "model.order=3"], ["context"]),
        (
            ["model=flstm", "model.bases=2", "model.rank=4"],
            ["layer1.basis1", "layer1.basis2"],
        ),
    ],
    ids=["gru-h", "ngram-context", "flstm-basis"],
)
def test_view_kind_conforms(tmp_path, overrides, views):
    probed = f"probe.views=[{','.join(views)}]"
    run(compose_config(tmp_path / "run", [*overrides, probed]))
    assert_conforms(audit_run(tmp_path / "run", WHOLE_FIT_BLOCK), views)


def test_speech_encoder_layer_conforms(tmp_path):
    overrides = [f"data.root={tmp_path / 'corpus'}", "probe.views=[layer2.h]"]
    run(compose_config(tmp_path / "run", overrides, TINY_SPEECH))
    assert_conforms(audit_run(tmp_path / "run", WHOLE_FIT_BLOCK), ["layer2.h"])


def test_audit_command_passes_and_catches_a_tampered_signature(lstm_run, tmp_path):
    passed = run_command(["audit", str(lstm_run), "--threads", "1"], timeout=300)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "all 21 view x offset gaps within bounds" in passed.stdout

    tampered = tmp_path / "tampered"
    shutil.copytree(lstm_run, tampered)
    path = tampered / "signature.json"
    stored = json.loads(path.read_text())
    stored["views"]["layer1.c"]["accuracy"][4] += 0.05  # a number the states do not support
    stored["views"]["logits"]["xent_bits"][2] -= 0.1
    path.write_text(json.dumps(stored))
    failed = run_command(["audit", str(tampered), "--threads", "1"], timeout=300)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    flagged = [line.split()[:2] for line in failed.stdout.splitlines() if "FAIL" in line]
    assert flagged == [["layer1.c", "4"], ["logits", "2"]]
    assert "2 of 21 view x offset gaps too large" in failed.stdout


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
