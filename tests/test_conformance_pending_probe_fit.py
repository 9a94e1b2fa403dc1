"""Conformance (issue 14's acceptance): every kind of view, in a tiny real run, against
scikit-learn's LogisticRegression (C chosen on validation) fitted on the same positions, split
and targets (memsig.audit): accuracy within 0.01 and cross-entropy within 0.03 bits at every
offset; and `memsig audit` passes on a tiny default-like run.

These fail today because of how memsig's probes fit, not because of the reference: on the
same states memsig's heads score worse than scikit-learn's (up to 0.15 bits at the last offset
an order-2 source decides, k = 2; 0.05-0.06 bits at k = 0 of a factorized basis) or differ in
accuracy by 0.01-0.02 at equal cross-entropy. They move back to test_conformance.py once the
probes meet them; they are not skipped."""

from __future__ import annotations

import pytest

from conftest import TINY_SPEECH, compose_config, run_command
from memsig.audit import AuditRow, audit_run
from memsig.pipeline import run

ACCURACY_TOLERANCE = 0.01
XENT_TOLERANCE_BITS = 0.03
WHOLE_FIT_BLOCK = 10**9  # the reference fits on every fit position, as the probes do
# the probes' default epoch budget (the tiny test configs cap it for speed): conformance is
# about the numbers a run reports, and a run's probes stop early when they have converged
FULL_BUDGET = ["probe.max_epochs=30"]


def assert_conforms(rows: list[AuditRow], views: list[str]) -> None:
    assert sorted({r.view for r in rows}) == sorted(views)
    gaps = [
        (r.view, r.offset, round(r.accuracy_gap, 4), round(r.xent_gap, 4))
        for r in rows
        if not r.passed(ACCURACY_TOLERANCE, XENT_TOLERANCE_BITS)
    ]
    assert not gaps, f"(view, offset, accuracy gap, xent gap) beyond tolerance: {gaps}"


def test_lstm_state_cell_and_logits_conform(tiny_lstm_run):
    rows = audit_run(tiny_lstm_run, WHOLE_FIT_BLOCK)
    assert_conforms(rows, ["layer1.h", "layer1.c", "logits"])


def test_audit_command_passes_on_a_tiny_default_run(tiny_lstm_run):
    passed = run_command(["audit", str(tiny_lstm_run)], timeout=300)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "all 21 view x offset gaps within bounds" in passed.stdout


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
    run(compose_config(tmp_path / "run", [*overrides, probed, *FULL_BUDGET]))
    assert_conforms(audit_run(tmp_path / "run", WHOLE_FIT_BLOCK), views)


def test_speech_encoder_layer_conforms(tmp_path):
    overrides = [
        f"data.root={tmp_path / 'corpus'}",
        # enough probe frames (about 1000 test frames) for accuracy to resolve 0.01, and an
        # encoder trained long enough for its layer to carry some grapheme history
        "data.utterances={train: 48, val: 4, probe_train: 60, probe_test: 30}",
        "model.training.max_epochs=6",
        "probe.views=[layer2.h]",
        *FULL_BUDGET,
    ]
    run(compose_config(tmp_path / "run", overrides, TINY_SPEECH))
    assert_conforms(audit_run(tmp_path / "run", WHOLE_FIT_BLOCK), ["layer2.h"])
