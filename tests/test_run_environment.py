"""A run on a shared machine: progress lines in logs that are files, files readable as the
umask says, and a thread count that leaves cores to others."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import PROJECT_ROOT, TINY, TINY_MARKOV
from memsig.runtime.atomic import write_json_atomic, write_text_atomic
from memsig.runtime.progress import LogProgress, LoopProgress, Ticker, clock_text
from memsig.runtime.threads import (
    default_threads,
    processes_per_node,
    torch_threads,
    usable_cores,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_loop_progress_prints_at_most_one_line_per_interval(caplog):
    clock = FakeClock()
    progress = LoopProgress("extraction probe_train", 1000, "steps", every_s=10, clock=clock)
    with caplog.at_level("INFO", logger="memsig.runtime.progress"):
        for second in range(1, 101):  # 4 steps a second for 100 s, reported every second
            clock.now += 1
            progress.update(4 * second)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10  # at 10, 20, ..., 100 s
    # at 10 s: 40 of 1000 steps at 4 steps/s, so 960 / 4 = 240 s left
    assert lines[0] == "extraction probe_train: 40/1000 steps (4%), 4.0 steps/s, ETA 0:04:00"
    assert lines[-1].startswith("extraction probe_train: 400/1000 steps (40%)")


def test_training_progress_line_has_rate_and_both_etas(caplog):
    clock = FakeClock()
    progress = LogProgress("base", every_s=10, clock=clock)
    trainer = SimpleNamespace(
        is_global_zero=True,
        num_training_batches=100,
        max_epochs=5,
        current_epoch=0,
        global_step=0,
        progress_bar_metrics={"train/loss": 1.23456},
    )
    progress.on_train_start(trainer, None)
    with caplog.at_level("INFO", logger="memsig.runtime.progress"):
        for step in range(1, 61):  # 5 steps a second
            clock.now += 0.2
            trainer.global_step = step
            progress.on_train_batch_end(trainer, None, None, None, step - 1)
    # at 10 s: step 50 of 100 at 5 steps/s: 50 steps (10 s) left in the epoch, 450 (90 s) in all
    assert [r.getMessage() for r in caplog.records] == [
        "base: epoch 1/5, step 50/100, train/loss=1.235, 5.0 steps/s, "
        "ETA 0:00:10 (epoch), <= 0:01:30 (max_epochs)"
    ]


def test_ticker_and_clock_text():
    clock = FakeClock()
    ticker = Ticker(every_s=5, clock=clock)
    clock.now += 4.9
    assert not ticker.due()
    clock.now += 0.1
    assert ticker.due() and not ticker.due()
    assert ticker.rate(10) == pytest.approx(2.0)
    assert clock_text(3725) == "1:02:05" and clock_text(float("nan")) == "?"


@pytest.fixture(scope="module")
def redirected_run(tmp_path_factory) -> tuple[Path, str]:
    """A tiny run with stdout and stderr going to a file (as under SLURM or nohup), the
    progress bar asked for, a line at every step (`progress_every=0`: the interval itself is
    tested with a fake clock above), umask 002 and the default threads."""
    root = tmp_path_factory.mktemp("redirected")
    run_dir, log_file = root / "run", root / "job.out"
    overrides = [
        *TINY,
        *TINY_MARKOV,
        "data.num_chars=20000",
        "model.hidden=16",
        "model.training.max_epochs=2",
        "probe.max_offset=2",
        "probe.max_epochs=2",
        "trainer.enable_progress_bar=true",
        "progress_every=0",
        f"hydra.run.dir={run_dir}",
    ]
    with log_file.open("w") as out:
        done = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "run.py"), *overrides],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
            umask=0o002,
            env={**os.environ, "WANDB_MODE": "disabled"},
        )
    text = log_file.read_text()
    assert done.returncode == 0, text[-3000:]
    return run_dir, text


def test_a_redirected_run_logs_progress_lines_not_bar_frames(redirected_run):
    run_dir, text = redirected_run
    assert "\r" not in text  # no bar frames
    base = [line for line in text.splitlines() if "base: epoch" in line]
    assert base and re.search(
        r"base: epoch [12]/2, step \d+/\d+, train/loss=[\d.]+.*, [\d.]+ steps/s, "
        r"ETA \d+:\d\d:\d\d \(epoch\), <= \d+:\d\d:\d\d \(max_epochs\)",
        base[0],
    )
    assert "probe: epoch" in text
    assert re.search(r"extraction probe_train: \d+/\d+ positions \(\d+%\)", text)
    assert re.search(r"extraction probe_test: \d+/\d+ positions \(100%\)", text)
    # the same lines are in the run's own log file
    (run_log,) = run_dir.glob("*.log")
    assert "base: epoch" in run_log.read_text()
    expected = default_threads(usable_cores(), 1)
    assert f"torch CPU threads: {expected} (threads=null" in text


def test_files_of_a_run_follow_the_umask(redirected_run):
    run_dir, _ = redirected_run
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {"signature.json", "signature.csv", "config.yaml", "base.ckpt"} <= {
        p.name for p in files
    }
    wrong = {
        str(p.relative_to(run_dir)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in files
        if stat.S_IMODE(p.stat().st_mode) != 0o664
    }
    assert not wrong


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_files_get_the_mode_of_a_plain_open(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        write_text_atomic(tmp_path / "sub" / "b.txt", "x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(previous)
    for name in ("a.json", "sub/b.txt", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


@pytest.mark.parametrize(
    "cores, processes, per_task, expected",
    [
        (1, 1, None, 1),
        (2, 1, None, 1),  # a 2-core machine: one thread, the other core for the rest
        (3, 1, None, 1),
        (8, 1, None, 4),
        (64, 1, None, 4),  # never more than 4 by default
        (16, 4, None, 2),  # 4 DDP processes share 16 cores
        (8, 8, None, 1),
        (64, 4, 6, 3),  # SLURM's cpus per task is each process's share
        (64, 4, 1, 1),
    ],
)
def test_default_threads(cores, processes, per_task, expected):
    assert default_threads(cores, processes, per_task) == expected


def test_threads_setting_environment_and_slurm(tmp_path):
    trainer = {"devices": 2}
    assert torch_threads(3, trainer, env={"OMP_NUM_THREADS": "5"})[0] == 3
    assert torch_threads(None, trainer, env={"OMP_NUM_THREADS": "5"}) == (5, "OMP_NUM_THREADS=5")
    assert torch_threads(None, trainer, env={"SLURM_CPUS_PER_TASK": "6"})[0] == 3
    assert torch_threads(None, trainer, env={})[0] == default_threads(usable_cores(), 2)
    assert processes_per_node({"devices": 2}) == 2
    assert processes_per_node({"devices": [0, 3, 5]}) == 3
    assert processes_per_node({}) == 1


def test_usable_cores_honour_a_cgroup_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("50000 100000\n")  # half a core
    assert usable_cores(quota) == 1
    quota.write_text(f"{100000 * affinity + 1} 100000\n")  # more than the affinity allows
    assert usable_cores(quota) == affinity
    quota.write_text("max 100000\n")
    assert usable_cores(quota) == affinity
    assert usable_cores(tmp_path / "missing") == affinity
