"""Fault injection: a run stopped (SIGTERM) or killed (SIGKILL) at each named point of the
pipeline (memsig.faults) and run again in the same run dir ends with every number of the
uninterrupted run's signature and every one of its files.

The faulted run is a fork of the test process (no interpreter start-up, the imports are
shared) that handles SIGTERM as the command line does; the rerun runs in the test process."""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from pathlib import Path

import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException

from conftest import compose_config
from memsig.cli import _stop_on_sigterm
from memsig.pipeline import run

# small enough for a run in seconds; early stopping ends both fits before max_epochs
FAST = [
    "data.num_chars=20000",
    "model.training.max_epochs=5",
    "model.training.patience=1",
    "model.training.min_delta=0.05",
    "probe.max_epochs=12",
    "probe.bootstrap.resamples=50",
    "threads=1",
]
TERM_EXIT = 143  # what the command line exits with on SIGTERM


def run_with_fault(run_dir: Path, fault: str, overrides: list[str] = ()) -> int:
    """Run in a forked process that sends itself the signal at `fault` (MEMSIG_FAULT);
    returns its exit status (or minus the signal that ended it)."""
    cfg = compose_config(run_dir, [*FAST, *overrides])
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        code = 1
        try:
            os.environ["MEMSIG_FAULT"] = fault
            signal.signal(signal.SIGTERM, _stop_on_sigterm)
            run(cfg)
            code = 0
        except SIGTERMException:
            code = TERM_EXIT
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def comparable(signature, run_dir: Path) -> dict:
    """The signature's record with the run dir taken out of its paths."""
    record = signature.to_dict()
    record["model"]["checkpoint"] = str(Path(record["model"]["checkpoint"]).relative_to(run_dir))
    return record


def output_files(run_dir: Path) -> set[str]:
    """Every file a run leaves (checkpoints and caches included), relative to the run dir."""
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: its signature record, its files, its probe's epochs."""
    run_dir = tmp_path_factory.mktemp("reference")
    signature = run(compose_config(run_dir, FAST))
    return comparable(signature, run_dir), output_files(run_dir)


POINTS = {  # fault point -> where it stops the run
    "base_epoch@1": "base training, after its first epoch",
    "base_fitted": "just after the last base epoch",
    "extract@2": "state extraction",
    "probe_epoch@1": "probe training, early",
    "probe_epoch@LATE": "probe training, its last epoch but one",
    "probe_fitted": "after the last probe checkpoint",
    "signature_file@1": "writing the signature files (after chars.json)",
    "signature_file@4": "writing the signature files (before signature.json)",
}


@pytest.mark.parametrize("signame", ["TERM", "KILL"])
@pytest.mark.parametrize("point", list(POINTS))
def test_a_rerun_after_a_fault_ends_with_the_uninterrupted_signature(
    reference, tmp_path, caplog, point, signame
):
    expected, expected_files = reference
    late = expected["probe"]["epochs"] - 1
    assert late >= 2, "the probe must train long enough for an early and a late fault"
    fault = f"{point.replace('LATE', str(late))}:{signame}"
    status = run_with_fault(tmp_path, fault)
    caplog.set_level(logging.INFO, "memsig")
    assert status == (TERM_EXIT if signame == "TERM" else -signal.SIGKILL), fault
    assert not (tmp_path / "signature.json").exists()

    resumed = run(compose_config(tmp_path, FAST))
    assert "cannot be loaded" not in caplog.text  # resumed, not started over
    if "epoch" in point or "fitted" in point:
        assert "resuming from" in caplog.text
    assert comparable(resumed, tmp_path) == expected
    assert output_files(tmp_path) == expected_files
