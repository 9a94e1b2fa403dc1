"""Fault injection: a run stopped (SIGTERM) or killed (SIGKILL) at each named point of the
pipeline (memsig.runtime.faults) and run again in the same run dir ends with every number of the
uninterrupted run's signature and every one of its files.

The faulted run is a fork of the test process (no interpreter start-up, the imports are
shared) that handles SIGTERM as the command line does; the rerun runs in the test process."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import sys
import traceback
from pathlib import Path

import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException

from conftest import compose_config
from memsig.cli import _stop_on_sigterm
from memsig.pipeline.run import run
from memsig.runtime.atomic import signals_deferred, write_atomic
from memsig.runtime.errors import ConfigError, MemsigError
from memsig.runtime.resume import ResumeCheckpoint
from memsig.runtime.run_lock import run_dir_lock

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


def comparable(signature) -> dict:
    """The signature's record with the run dir taken out of the checkpoint's path."""
    record = signature.to_dict()
    checkpoint = Path(record["model"]["checkpoint"])
    record["model"]["checkpoint"] = str(checkpoint.relative_to(checkpoint.parents[1]))
    return record


def output_files(run_dir: Path) -> set[str]:
    """Every file a run leaves (checkpoints and caches included), relative to the run dir."""
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted run: its dir, its signature record and its files."""
    run_dir = tmp_path_factory.mktemp("reference")
    signature = run(compose_config(run_dir, FAST))
    return run_dir, comparable(signature), output_files(run_dir)


@pytest.fixture
def reference(reference_run):
    """The uninterrupted run's signature record and files."""
    return reference_run[1:]


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


@pytest.fixture(scope="module")
def base_stage_done(reference_run, tmp_path_factory) -> Path:
    """The reference run dir as the base stage left it (the signature stage's outputs taken
    away): faults in the signature stage start from here instead of training again."""
    run_dir = tmp_path_factory.mktemp("base_done") / "run"
    shutil.copytree(reference_run[0], run_dir)
    shutil.rmtree(run_dir / "cache")
    for probe in (run_dir / "checkpoints").glob("probe-*"):
        shutil.rmtree(probe)
    for name in json.loads((run_dir / "signature.json").read_text())["files"]:
        (run_dir / name).unlink()
    (run_dir / "signature.json").unlink()
    return run_dir


@pytest.mark.parametrize("signame", ["TERM", "KILL"])
@pytest.mark.parametrize("point", list(POINTS))
def test_a_rerun_after_a_fault_ends_with_the_uninterrupted_signature(
    reference, base_stage_done, tmp_path, caplog, point, signame
):
    expected, expected_files = reference
    late = expected["probe"]["epochs"] - 1
    assert late >= 2, "the probe must train long enough for an early and a late fault"
    fault = f"{point.replace('LATE', str(late))}:{signame}"
    run_dir = tmp_path / "run"
    if not point.startswith("base_"):
        shutil.copytree(base_stage_done, run_dir)
    status = run_with_fault(run_dir, fault)
    caplog.set_level(logging.INFO, "memsig")
    assert status == (TERM_EXIT if signame == "TERM" else -signal.SIGKILL), fault
    assert not (run_dir / "signature.json").exists()

    resumed = run(compose_config(run_dir, FAST))
    assert "cannot be loaded" not in caplog.text  # resumed, not started over
    if "epoch" in point or "fitted" in point:
        assert "resuming from" in caplog.text
    assert comparable(resumed) == expected
    assert output_files(run_dir) == expected_files


def copied_run(reference_run, tmp_path) -> Path:
    """A copy of the finished reference run (a moved dir must work as well as the original)."""
    copy = tmp_path / "copy"
    shutil.copytree(reference_run[0], copy)
    return copy


def truncate(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


DAMAGE = {  # what a user (or a full disk) does to a finished run -> the files it touches
    "signature.json removed": ["signature.json"],
    "side files removed": ["chars.json", "signature.png", "signature.csv"],
    "base.ckpt removed": ["checkpoints/base.ckpt"],
    "cache file truncated": ["cache/probe_train/layer1.h.npy", "signature.json"],
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_finished_run_is_completed_without_training_again(
    reference_run, tmp_path, caplog, damage
):
    _, expected, expected_files = reference_run
    run_dir = copied_run(reference_run, tmp_path)
    checkpoints = sorted((run_dir / "checkpoints").glob("*/last.ckpt"))
    trained = {path: path.stat().st_mtime_ns for path in checkpoints}
    for name in DAMAGE[damage]:
        if name.endswith(".npy"):
            truncate(run_dir / name)
        else:
            (run_dir / name).unlink()
    caplog.set_level(logging.INFO, "memsig")
    assert comparable(run(compose_config(run_dir, FAST))) == expected
    assert output_files(run_dir) == expected_files
    assert {path: path.stat().st_mtime_ns for path in checkpoints} == trained  # no epoch
    if damage == "cache file truncated":
        assert "is damaged (layer1.h.npy:" in caplog.text


def test_lost_best_weights_are_a_clear_error(reference_run, tmp_path):
    run_dir = copied_run(reference_run, tmp_path)
    (run_dir / "checkpoints" / "base.ckpt").unlink()
    (run_dir / "checkpoints" / "lightning" / "best.ckpt").unlink()
    with pytest.raises(MemsigError, match="best weights are gone; delete .*lightning"):
        run(compose_config(run_dir, FAST))


def test_a_finished_run_is_skipped(reference_run, tmp_path, caplog):
    _, expected, expected_files = reference_run
    run_dir = copied_run(reference_run, tmp_path)
    caplog.set_level(logging.INFO, "memsig")
    assert comparable(run(compose_config(run_dir, FAST))) == expected
    assert "signature already complete" in caplog.text
    assert output_files(run_dir) == expected_files


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("seed=1", "seed: 0 -> 1"),
        ("data.num_chars=30000", "data_sha256: "),
        ("model.hidden=32", "model.hidden: 48 -> 32"),
    ],
)
def test_a_rerun_with_other_inputs_is_refused(reference_run, tmp_path, override, named):
    run_dir = copied_run(reference_run, tmp_path)
    before = (run_dir / "signature.json").read_bytes()
    with pytest.raises(ConfigError, match="already holds a base model made from other") as err:
        run(compose_config(run_dir, [*FAST, override]))
    assert named in str(err.value)
    assert (run_dir / "signature.json").read_bytes() == before


def test_an_interrupted_training_of_other_inputs_is_refused(tmp_path):
    assert run_with_fault(tmp_path, "base_epoch@1:KILL") == -signal.SIGKILL
    with pytest.raises(MemsigError, match=r"interrupted training made from other inputs.*seed"):
        run(compose_config(tmp_path, [*FAST, "seed=1"]))
    assert not (tmp_path / "signature.json").exists()


def test_a_reused_checkpoint_is_probed_as_what_it_is(reference_run, tmp_path, caplog):
    """base_ckpt=: the model comes from the checkpoint (an lstm, whatever model= says); a
    rerun with another seed or other data recomputes the signature, never reuses it."""
    ref_dir, expected, _ = reference_run
    base = f"base_ckpt={ref_dir / 'checkpoints' / 'base.ckpt'}"
    caplog.set_level(logging.INFO, "memsig")
    probed = run(compose_config(tmp_path, [*FAST, "stage=signature", base, "model=gru"]))
    assert "holds model lstm; the configured model (gru) is ignored" in caplog.text
    assert probed.model["name"] == "lstm"
    assert "name: lstm" in (tmp_path / "config.yaml").read_text()
    record = probed.to_dict()
    for key in ("views", "baseline", "offsets", "probe", "data"):
        assert record[key] == expected[key], key

    fresh = run(compose_config(tmp_path / "seed1", [*FAST, "stage=signature", base, "seed=1"]))
    rerun = run(compose_config(tmp_path, [*FAST, "stage=signature", base, "seed=1"]))
    assert "seed: 0 -> 1): computing it again" in caplog.text  # the data too: seeded
    assert rerun.to_dict()["views"] == fresh.to_dict()["views"] != expected["views"]
    assert rerun.probe["seed"] == 1

    other_data = [*FAST, "stage=signature", base, "seed=1", "data.num_chars=24000"]
    changed = run(compose_config(tmp_path, other_data))
    assert changed.data["sha256"] != rerun.data["sha256"]
    assert changed.data["probe_test_tokens"] > rerun.data["probe_test_tokens"]


def test_csv_metrics_of_earlier_attempts_are_kept(reference_run, tmp_path):
    run_dir = copied_run(reference_run, tmp_path)
    attempts = []
    for _ in range(2):
        (run_dir / "signature.json").unlink()
        run(compose_config(run_dir, [*FAST, "logger=csv"]))
        attempts.append((run_dir / "csv" / "metrics.csv").read_text())
    assert "signature/layer1.h/capacity" in attempts[0]
    assert (run_dir / "csv" / "metrics.1.csv").read_text() == attempts[0]
    assert not (run_dir / "csv" / "metrics.2.csv").exists()


def test_one_run_at_a_time_in_a_run_dir(tmp_path):
    holder = f"in use by pid {os.getpid()} on host "
    with run_dir_lock(tmp_path), pytest.raises(MemsigError, match=holder):
        run(compose_config(tmp_path, FAST))
    with run_dir_lock(tmp_path):  # released when the holder ends
        pass


class DiskFull:
    """A trainer whose checkpoint write fills the disk half way."""

    is_global_zero = True

    def save_checkpoint(self, path: Path, weights_only: bool) -> None:
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_checkpoint_write_that_fails_leaves_no_file(tmp_path):
    saver = ResumeCheckpoint(tmp_path, "probe")
    with pytest.raises(OSError, match="No space left"):
        saver._save(DiskFull(), "last.ckpt", weights_only=False)
    assert list(tmp_path.iterdir()) == []


def test_a_file_write_that_fails_leaves_no_file(tmp_path):
    """Signature files and figures go through write_atomic: a full disk leaves nothing."""

    def half_then_full(tmp: Path) -> None:
        tmp.write_bytes(b"half a figure")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomic(tmp_path / "signature.png", half_then_full)
    assert list(tmp_path.iterdir()) == []


def test_a_stop_signal_during_an_atomic_write_waits_for_the_file(tmp_path):
    """SIGTERM sent while a file is written (as torch.save writes, through Python calls) is
    handled right after the write, never inside it: the file is complete and the signal is
    not lost."""
    seen: list[str] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append("handled"))
    target = tmp_path / "state.bin"

    def write(tmp: Path) -> None:
        with tmp.open("wb") as out:
            out.write(b"first half ")
            os.kill(os.getpid(), signal.SIGTERM)
            out.write(b"second half")
        seen.append("written")

    try:
        write_atomic(target, write)
        seen.append("after")
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            seen.append("inside")
        seen.append("end")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == ["written", "handled", "after", "inside", "handled", "end"]
    assert target.read_bytes() == b"first half second half"
