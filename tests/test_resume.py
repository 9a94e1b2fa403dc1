"""Fault injection: a run killed with SIGTERM during base training and again during probe
training continues where it stopped and ends with the signature of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, TINY, TINY_MARKOV, compose_config
from memsig.pipeline.run import run

FIXED_LENGTH = [  # no early stopping, so both runs train the same number of epochs
    "model.training.max_epochs=10",
    "model.training.patience=10",
    "probe.max_epochs=40",
    "probe.patience=40",
]


def launch(runs: Path) -> subprocess.Popen:
    """The same command each time, as a SLURM requeue runs it: the run dir comes from the job
    id, so the restarted job finds the interrupted run's dir."""
    args = [*TINY, *TINY_MARKOV, *FIXED_LENGTH, f"hydra.run.dir={runs}/${{oc.env:SLURM_JOB_ID}}"]
    return subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "run.py"), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SLURM_JOB_ID": "4242"},
    )


def terminate_when(process: subprocess.Popen, pattern: str, run_dir: Path) -> str:
    """SIGTERM the run as soon as a file matching `pattern` appears; returns its stderr."""
    deadline = time.monotonic() + 300
    while not (run_dir.is_dir() and list(run_dir.glob(pattern))):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, f"{pattern} never appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr
    return stderr


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_signature(tmp_path):
    reference = run(compose_config(tmp_path / "reference", FIXED_LENGTH))

    runs = tmp_path / "runs"
    run_dir = runs / "4242"
    stderr = terminate_when(launch(runs), "checkpoints/lightning/last.ckpt", run_dir)
    assert f"hydra.run.dir={run_dir}" in stderr
    assert not (run_dir / "checkpoints" / "base.ckpt").exists()

    terminate_when(launch(runs), "checkpoints/probe-*/last.ckpt", run_dir)
    assert (run_dir / "checkpoints" / "base.ckpt").is_file()
    assert not (run_dir / "signature.json").exists()

    final = launch(runs)
    _, stderr = final.communicate(timeout=600)
    assert final.returncode == 0, stderr
    resumed = json.loads((run_dir / "signature.json").read_text())
    expected = reference.to_dict()
    assert resumed["model"]["metrics"] == pytest.approx(expected["model"]["metrics"], abs=1e-6)
    for view, scores in expected["views"].items():
        for key in ("accuracy", "xent_bits"):
            assert resumed["views"][view][key] == pytest.approx(scores[key], abs=1e-5), view


def test_a_truncated_last_checkpoint_is_not_trusted(tmp_path):
    from memsig.runtime.resume import resume_point

    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    (checkpoints / "inputs.json").write_text('{"seed": 0}')
    assert resume_point(checkpoints, resume=True, inputs={"seed": 0}) is None
    assert sorted(p.name for p in checkpoints.iterdir()) == ["inputs.json"]
