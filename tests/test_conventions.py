"""What a Hydra + Lightning user expects of the command line: `memsig --help`, the debug/,
callbacks/ and local/ groups, the config printed at the start, paths under the launch folder,
and W&B runs named and tagged after their choices, with information charted beside accuracy."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_module
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor

from conftest import (
    PROJECT_ROOT,
    TINY,
    TINY_MARKOV,
    compose_config,
    offline_env,
    run_command,
    wandb_records,
)
from memsig.cli import COMMANDS
from memsig.config.compose import CONFIG_MODULE
from memsig.pipeline import run as pipeline_run
from memsig.pipeline.run import run
from memsig.pipeline.training import configured_callbacks

# a user's own config group, as README "Installed use" shows it
USER_EXPERIMENT = """# @package _global_
model:
  hidden: 16
"""


def memsig(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`memsig ARGS` started in `cwd` (run.py is the same entry point as the console script)."""
    return run_command(args, env or {**os.environ, "WANDB_MODE": "disabled"}, 300, cwd)


@pytest.mark.slow
def test_help_lists_the_commands_and_the_config_groups(tmp_path):
    shown = memsig(["--help"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    for name in COMMANDS:
        assert f"\n  {name} " in shown.stdout
    assert "debug: default, fdr, limit" in shown.stdout
    assert "callbacks: default, early_stopping, none" in shown.stdout
    assert "model: asr_lstm, external, flstm, gru, lstm" in shown.stdout
    hydra_help = memsig(["--hydra-help"], tmp_path)
    assert hydra_help.returncode == 0 and "== Flags ==" in hydra_help.stdout
    assert not (tmp_path / "outputs").exists()  # asking for help starts no run


@pytest.fixture(scope="module")
def fdr_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path, Path, float]:
    """`memsig debug=fdr` started in a fresh folder holding the user's own config group
    (hydra.searchpath), logging to W&B offline: (result, launch folder, run dir, seconds)."""
    cwd = tmp_path_factory.mktemp("launch")
    (cwd / "my_conf" / "experiment").mkdir(parents=True)
    (cwd / "my_conf" / "experiment" / "tiny.yaml").write_text(USER_EXPERIMENT)
    # a group of the user's own that memsig's configs do not have, added with +
    (cwd / "my_conf" / "notes").mkdir()
    (cwd / "my_conf" / "notes" / "short.yaml").write_text(
        "# @package _global_\nprogress_every: 30\n"
    )
    env = offline_env(tmp_path_factory.mktemp("home"))
    started = time.perf_counter()
    result = memsig(
        [
            "debug=fdr",
            "hydra.searchpath=[file://my_conf]",
            "experiment=tiny",
            "+notes=short",
            "logger=wandb",
            "tags=[smoke]",
            "threads=1",
            "data.num_chars=20000",
            "trainer.enable_progress_bar=false",
        ],
        cwd,
        env,
    )
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (cwd / "outputs" / "debug" / "runs").iterdir()
    return result, cwd, run_dir, seconds


def _global_step(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]


def test_debug_fdr_runs_both_stages_on_one_batch_and_says_so(fdr_run):
    result, _, run_dir, seconds = fdr_run
    assert (run_dir / "checkpoints" / "base.ckpt").is_file()
    assert (run_dir / "signature.json").is_file()
    assert _global_step(run_dir / "checkpoints" / "lightning" / "last.ckpt") == 1
    probes = list((run_dir / "checkpoints").glob("probe-*/last.ckpt"))
    assert probes and all(_global_step(p) == 1 for p in probes)
    log = result.stdout + result.stderr
    assert "debug run (trainer.fast_dev_run=True): its numbers are not a measurement" in log
    assert (
        "debug run (trainer.fast_dev_run=True) finished: its numbers are not a measurement" in log
    )
    assert seconds < 120  # imports and process start included, on a shared 2-core machine


def test_a_run_writes_under_the_launch_folder_and_reads_the_users_config_group(fdr_run):
    _, cwd, run_dir, _ = fdr_run
    assert run_dir.parent == cwd / "outputs" / "debug" / "runs"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["paths"]["root_dir"] == str(cwd)
    assert config["paths"]["data_dir"] == str(cwd / "data")
    assert config["model"]["hidden"] == 16  # from my_conf/experiment/tiny.yaml


def test_the_config_is_printed_once_at_the_start(fdr_run):
    result, _, run_dir, _ = fdr_run
    log = result.stdout + result.stderr
    assert log.count("config (in full: ") == 1
    assert log.index("config (in full: ") < log.index("torch CPU threads")
    assert f"config (in full: {run_dir / 'config.yaml'})" in log
    assert "debug=fdr" in log and "experiment=tiny" in log
    assert "  model: name=lstm, layers=2, hidden=16," in log
    assert "fast_dev_run=True" in log


def _history(records: list[dict]) -> dict:
    history = {}
    for record in records:
        if record["type"] == "history":
            history.update(record["history"]["item"])
    return history


def test_wandb_run_is_named_and_tagged_and_charts_information_next_to_accuracy(fdr_run):
    _, _, run_dir, _ = fdr_run
    records = wandb_records(run_dir / "wandb")
    (run_record,) = [r["run"] for r in records if r["type"] == "run"]
    assert run_record["display_name"] == "tiny-lstm-markov-linear"
    assert run_record["tags"] == ["smoke", "tiny", "lstm", "markov", "linear", "fdr"]
    history = _history(records)
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    signature = json.loads((run_dir / "signature.json").read_text())
    for metric in ("accuracy", "info_bits"):
        chart = json.loads(
            (offline / "files" / history[f"signature/{metric}_table.path"]).read_text()
        )
        assert chart["columns"] == ["step", "lineKey", "lineVal"]
        charted = {}
        for offset, view, value in chart["data"]:
            charted.setdefault(view, []).append((offset, value))
        assert set(charted) == set(signature["views"])
        for view, points in charted.items():
            assert [k for k, _ in points] == signature["offsets"]
            assert [v for _, v in points] == pytest.approx(signature["views"][view][metric])
    # the layer curves are a figure; their numbers are in layers/table, never an empty table
    assert history["layer_curves/figure._type"] == "image-file"
    assert not any(key.startswith("layer_curves/table") for key in history)
    views, offsets = len(signature["views"]), len(signature["offsets"])
    assert history["layers/table.nrows"] == views * offsets


@pytest.mark.slow
def test_debug_limit_trains_a_few_batches_of_two_epochs(tmp_path, caplog):
    tiny = [o for o in TINY if "max_epochs" not in o]  # debug=limit sets the epochs
    cfg = compose_config(tmp_path / "run", ["debug=limit", *TINY_MARKOV], tiny=tiny)
    with caplog.at_level(logging.WARNING, logger="memsig"):
        run(cfg)
    # 2 epochs of 4 batches each: base model and every probe
    assert _global_step(tmp_path / "run" / "checkpoints" / "lightning" / "last.ckpt") == 8
    probes = list((tmp_path / "run" / "checkpoints").glob("probe-*/last.ckpt"))
    assert probes and all(_global_step(p) == 8 for p in probes)
    expected = "debug run (trainer.limit_train_batches=4, trainer.limit_val_batches=2)"
    assert sum(expected in r.getMessage() for r in caplog.records) == 2


def test_callbacks_group_builds_the_early_stopping_the_fit_had(tmp_path):
    cfg = compose_config(tmp_path, [])
    (stop,) = configured_callbacks(cfg, "val/bpc")
    training = cfg.model.training
    reference = EarlyStopping(
        monitor="val/bpc", mode="min", patience=training.patience, min_delta=training.min_delta
    )
    assert isinstance(stop, EarlyStopping)
    for key in ("monitor", "mode", "patience", "min_delta", "state_key"):
        assert getattr(stop, key) == getattr(reference, key), key

    speech = compose_config(tmp_path, ["model=asr_lstm", "data=synth_speech"], tiny=[])
    (stop,) = configured_callbacks(speech, "val/cer")
    assert (
        (stop.monitor, stop.patience)
        == ("val/cer", speech.model.training.patience)
        == (
            "val/cer",
            4,
        )
    )
    assert configured_callbacks(compose_config(tmp_path, ["callbacks=none"]), "val/bpc") == []
    added = compose_config(
        tmp_path,
        ["+callbacks.lr_monitor._target_=lightning.pytorch.callbacks.LearningRateMonitor"],
    )
    built = configured_callbacks(added, "val/bpc")
    assert [type(c) for c in built] == [EarlyStopping, LearningRateMonitor]


@pytest.mark.parametrize(
    ("setting", "sweep", "printed"),
    [(None, False, True), (None, True, False), (True, True, True), (False, False, False)],
)
def test_print_config_setting(tmp_path, caplog, monkeypatch, setting, sweep, printed):
    cfg = compose_config(
        tmp_path, [f"extras.print_config={'null' if setting is None else setting}"]
    )
    monkeypatch.setattr(pipeline_run, "in_sweep", lambda: sweep)
    with caplog.at_level(logging.INFO, logger="memsig"):
        pipeline_run._print_config(cfg, tmp_path / "config.yaml")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert ("config (in full:" in text) is printed
    if printed:
        assert "  model: name=lstm, layers=1, hidden=48, embed=8," in text
        assert all(len(line) <= 100 for line in text.splitlines())


def test_local_group_is_optional_git_ignored_and_read_from_the_search_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        plain = compose("config", overrides=["paths.output_dir=x"])
    assert plain.paths.data_dir == str(tmp_path / "data")  # the launch folder, no local/ config
    assert plain.paths.log_dir == str(tmp_path / "outputs")
    (tmp_path / "mine" / "local").mkdir(parents=True)
    (tmp_path / "mine" / "local" / "default.yaml").write_text(
        "# @package _global_\npaths:\n  data_dir: /corpora\n"
    )
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        local = compose(
            "config", overrides=["paths.output_dir=x", f"hydra.searchpath=[file://{tmp_path}/mine]"]
        )
    assert local.paths.data_dir == "/corpora"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "conf/local/default.yaml"], cwd=PROJECT_ROOT
    )
    assert ignored.returncode == 0
    tracked = subprocess.run(
        ["git", "ls-files", "conf/local"], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert tracked.stdout.split() == ["conf/local/.gitkeep"]
