"""The command line as a user meets it: exit codes and messages, nothing trained on bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT


def memsig(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=PROJECT_ROOT.parent,
    )


def test_unknown_model_names_the_value_and_the_choices(tmp_path):
    result = memsig("model=transformer", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "model/transformer" in result.stderr
    assert "Available options" in result.stderr and "lstm" in result.stderr
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_non_integer_offset_is_a_clear_error(tmp_path):
    result = memsig("probe.offsets=[0,1,x]", "logger=none", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert "memsig: error: probe.offsets contains 'x'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_missing_text_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.txt"
    result = memsig("data=text", f"data.path={missing}", "logger=none", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert str(missing) in result.stderr and "data.path" in result.stderr
