"""`memsig selfcheck` end to end: every known-answer row passes, quickly, with its figure."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from memsig.config import PROJECT_ROOT


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
    assert len(table) == 10 and all(line.endswith("pass") for line in table)
    for name in (
        "repeat lag=2",
        "repeat lag=3",
        "copy delay=2",
        "copy delay=4",
        "n-gram",
        "untrained",
    ):
        assert any(line.startswith(name) for line in table), name
    assert "all 10 checks passed" in result.stdout
    assert (tmp_path / "selfcheck.png").stat().st_size > 10_000
    assert elapsed < 300
