"""`memsig selfcheck` end to end: every known-answer row passes, quickly, with its figure."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conftest import PROJECT_ROOT
from memsig.commands import selfcheck
from memsig.commands.selfcheck import Row
from memsig.signature.record import Signature, ViewScores


@pytest.mark.slow
def test_selfcheck_passes_every_row_and_writes_the_figure(tmp_path):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "run.py"), "selfcheck", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "disabled"},
        cwd=PROJECT_ROOT.parent,
    )
    elapsed = time.monotonic() - started
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.endswith(("pass", "FAIL"))]
    assert len(table) == 11 and all(line.endswith("pass") for line in table)
    for name in (
        "repeat lag=2",
        "repeat lag=3",
        "copy delay=2",
        "copy delay=4",
        "n-gram",
        "untrained",
    ):
        assert any(line.startswith(name) for line in table), name
    assert "all 11 checks passed" in result.stdout
    assert (tmp_path / "selfcheck.png").stat().st_size > 10_000
    assert elapsed < 300


def _signature() -> Signature:
    offsets, prior = [0, 1, 2, 3], [3.0] * 4
    scores = ViewScores.from_scores(8, offsets, [1.0, 0.5, 0.2, 0.1], [0.0, 2.0, 2.9, 3.0], prior)
    return Signature(
        model={"name": "gru"},
        data={"name": "copy"},
        probe={"kind": "linear"},
        offsets=offsets,
        baseline={"majority_accuracy": [0.13] * 4, "prior_entropy_bits": prior},
        views={"layer1.h": scores},
    )


def test_a_failing_row_makes_the_exit_status_non_zero(tmp_path, monkeypatch, capsys):
    rows = [Row("copy delay=1", "min accuracy at k=0..1", ">= 0.95", 0.5, False)]
    monkeypatch.setattr(selfcheck, "BATTERY", (selfcheck._copy(1),))
    monkeypatch.setattr(
        selfcheck, "run_experiment", lambda experiment, run_dir: (_signature(), rows)
    )
    with pytest.raises(SystemExit) as caught:
        selfcheck.command(["--out", str(tmp_path)])
    assert caught.value.code == 1
    out = capsys.readouterr().out
    assert "0.500" in out and "FAIL" in out and "1 of 1 checks failed" in out
    assert (tmp_path / "selfcheck.png").is_file()


def test_copy_judge_applies_the_acceptance_thresholds():
    judged = selfcheck._copy(1).judge(_signature())
    assert [row.passed for row in judged] == [False, True]  # accuracy 0.5 at k=1
    assert judged[1].measured == 0.0  # info at k=3, against info at k=1 (1 bit) / 5
