"""Both stages under DDP on 2 CPU processes (gloo), launched the way a user launches them
(`python run.py trainer=ddp ...`), against the same config in a single process."""

from __future__ import annotations

import json

import pytest

from conftest import TINY, TINY_MARKOV, compose_config, run_command
from memsig.pipeline import run

SMALL = ["model.training.max_epochs=3", "probe.max_offset=3", "probe.max_epochs=4"]


def test_ddp_on_two_processes_matches_one_process(tmp_path):
    ddp_dir = tmp_path / "ddp"
    done = run_command(
        [
            *TINY,
            *TINY_MARKOV,
            *SMALL,
            "logger=csv",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            f"hydra.run.dir={ddp_dir}",
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting with 2 processes" in done.stderr + done.stdout

    single = run(compose_config(tmp_path / "single", [*SMALL, "logger=csv"])).to_dict()
    ddp = json.loads((ddp_dir / "signature.json").read_text())
    # the base stage: batches split by rows, gradients averaged, val/bpc reduced over ranks
    assert ddp["model"]["metrics"]["val/bpc"] == pytest.approx(
        single["model"]["metrics"]["val/bpc"], rel=1e-4
    )
    # the probe stage: positions split per batch; test scores summed over ranks
    assert ddp["data"]["probe_test_tokens"] == single["data"]["probe_test_tokens"]
    # Same steps up to float summation order, which Adam carries into the weights: the
    # cross-entropy (continuous) must agree closely; accuracy of a head near chance can flip
    # argmax ties, so it gets a looser bound.
    for view, scores in single["views"].items():
        assert ddp["views"][view]["xent_bits"] == pytest.approx(scores["xent_bits"], abs=0.03)
        assert ddp["views"][view]["accuracy"] == pytest.approx(scores["accuracy"], abs=0.05)
        assert ddp["views"][view]["capacity"] == pytest.approx(scores["capacity"], rel=0.02)

    # rank 1 read the cache rank 0 wrote, and wrote no files of its own
    rank1_log = (ddp_dir / "train_ddp_process_1.log").read_text()
    assert "rank 1 reads the state cache" in rank1_log
    assert len(list((ddp_dir / "cache" / "probe_train").glob("manifest.json"))) == 1
    metrics = (ddp_dir / "csv" / "metrics.csv").read_text()
    assert metrics.count("\n") > 1 and not (ddp_dir / "csv" / "version_1").exists()
