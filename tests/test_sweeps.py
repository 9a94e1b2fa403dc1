"""Sweeps the way users launch them (`python run.py -m ...`): the local submitit launcher,
Optuna over the objective, the sweep comparison, and bad sweeps."""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

import pytest
import yaml
from scipy import stats

from conftest import TINY, TINY_MARKOV, offline_env, run_command, wandb_records
from memsig.cli import main
from memsig.pipeline.plan import prepare
from memsig.runtime.cluster import check_layout, check_local_ddp_in_sweep
from memsig.runtime.errors import ConfigError
from memsig.signature.objective import objective
from memsig.signature.record import Signature

# a run of a few seconds: one epoch of base training, offsets 0..2
QUICK = [
    *TINY,
    *TINY_MARKOV,
    "model.hidden=16",
    "model.training.max_epochs=1",
    "probe.max_offset=2",
    "probe.max_epochs=2",
    "data.num_chars=20000",
]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """Two jobs (seeds 0 and 1) through submitit's local executor, W&B offline."""
    root = tmp_path_factory.mktemp("sweep")
    sweep = root / "sweep"
    done = run_command(
        [
            "-m",
            "hydra/launcher=local",
            *QUICK,
            "seed=0,1",
            "logger=wandb",
            f"hydra.sweep.dir={sweep}",
        ],
        env=offline_env(root),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep


def test_local_submitit_sweep_runs_every_job_in_its_own_dir_and_wandb_group(local_sweep):
    jobs = sorted(p for p in local_sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    assert list((local_sweep / ".submitit").iterdir())  # really went through submitit
    seeds, groups, names = [], set(), set()
    for job in jobs:
        assert (job / "signature.json").is_file()
        seeds.append(yaml.safe_load((job / "config.yaml").read_text())["seed"])
        (run_record,) = [r["run"] for r in wandb_records(job / "wandb") if r["type"] == "run"]
        groups.add(run_record["run_group"])
        names.add(run_record["display_name"])
    assert seeds == [0, 1]
    assert groups == {local_sweep.name}  # one group: the sweep
    assert len(names) == 2 and all("seed=" in n for n in names)


def test_compare_gathers_a_multirun_with_mean_and_interval_over_seeds(
    local_sweep, tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    out = tmp_path / "compare"
    monkeypatch.setattr(sys, "argv", ["memsig", "compare", str(local_sweep), "--out", str(out)])
    main()
    assert str(out / "compare.csv") in capsys.readouterr().out
    signatures = [Signature.load(local_sweep / job) for job in ("0", "1")]
    with open(out / "compare.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["group"] for r in rows} == {"all"}  # only the seed varied: one group
    row = next(r for r in rows if r["view"] == "layer1.h" and r["metric"] == "capacity")
    values = [s.views["layer1.h"].capacity for s in signatures]
    low, high = stats.t.interval(
        0.95, df=1, loc=statistics.mean(values), scale=statistics.stdev(values) / 2**0.5
    )
    assert int(row["n"]) == 2
    assert float(row["mean"]) == pytest.approx(statistics.mean(values))
    assert (float(row["low"]), float(row["high"])) == pytest.approx((low, high))
    acc = next(
        r
        for r in rows
        if r["view"] == "logits" and r["metric"] == "accuracy" and r["offset"] == "1"
    )
    assert float(acc["mean"]) == pytest.approx(
        statistics.mean(s.views["logits"].accuracy[1] for s in signatures)
    )
    assert (out / "compare.png").stat().st_size > 0
    history = {}
    for record in wandb_records(out / "wandb"):
        if record["type"] == "history":
            history.update(record["history"]["item"])
    assert history["compare/table._type"] == "table-file"
    assert history["compare/table.nrows"] == len(rows)
    assert history["compare/figure._type"] == "image-file"


@pytest.mark.slow
def test_optuna_search_optimises_the_configured_objective(tmp_path):
    """Two trials over the search space of conf/hparams_search/optuna.yaml (embed, lr) plus
    one from the command line (hidden); the best value is the best trial's objective."""
    sweep = tmp_path / "search"
    searched = ("model.hidden=", "model.embed=", "model.optimizer.lr=")
    fixed = [o for o in QUICK if not o.startswith(searched)]
    done = run_command(
        [
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler.seed=0",
            *fixed,
            "model.hidden=choice(8,16)",
            "logger=none",
            "objective.view=layer1.h",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    capacities = [Signature.load(sweep / job).views["layer1.h"].capacity for job in ("0", "1")]
    assert result["best_value"] == pytest.approx(max(capacities))
    models = [yaml.safe_load((sweep / j / "config.yaml").read_text())["model"] for j in "01"]
    for model in models:
        assert model["hidden"] in (8, 16) and model["embed"] in (8, 16, 32)
        assert 0.001 <= model["optimizer"]["lr"] <= 0.01
    assert models[0]["optimizer"]["lr"] != models[1]["optimizer"]["lr"]


def test_objective_picks_the_configured_number(tmp_path):
    signature = Signature.from_dict(
        json.loads(
            json.dumps(
                {
                    "schema": "memsig/signature@1",
                    "model": {
                        "name": "m",
                        "params": 1,
                        "checkpoint": "",
                        "metrics": {"val/bpc": 1.5},
                    },
                    "data": {
                        "name": "d",
                        "unit": "char",
                        "vocab": ["a", "b"],
                        "probe_train_tokens": 1,
                        "probe_test_tokens": 1,
                    },
                    "probe": {"kind": "linear"},
                    "offsets": [-1, 0, 1],
                    "baseline": {"majority_accuracy": [0.5] * 3, "prior_entropy_bits": [1.0] * 3},
                    "views": {
                        "a": {
                            "dim": 1,
                            "accuracy": [0.1, 0.9, 0.7],
                            "xent_bits": [1.0, 0.2, 0.5],
                            "info_bits": [0.0, 0.8, 0.5],
                            "capacity": 1.3,
                        },
                        "b": {
                            "dim": 1,
                            "accuracy": [0.2, 0.6, 0.6],
                            "xent_bits": [1.0, 0.6, 0.6],
                            "info_bits": [0.0, 0.4, 0.4],
                            "capacity": 0.8,
                        },
                    },
                }
            )
        )
    )
    assert objective(signature, "capacity", "a") == pytest.approx(1.3)
    assert objective(signature, "capacity", None) == pytest.approx((1.3 + 0.8) / 2)
    assert objective(signature, "accuracy", "b") == pytest.approx(0.6)  # offsets 0 and 1
    assert objective(signature, "val/bpc", None) == pytest.approx(1.5)


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_others(tmp_path):
    """W&B online without credentials in job 1: a clear error; job 0 still finishes."""
    sweep = tmp_path / "sweep"
    done = run_command(
        [
            "-m",
            *QUICK,
            "logger=wandb",
            "logger.wandb.offline=true,false",
            f"hydra.sweep.dir={sweep}",
        ],
        env=offline_env(tmp_path),
    )
    assert done.returncode != 0
    assert "memsig: error in job" in done.stderr and "WANDB_API_KEY" in done.stderr
    assert (sweep / "0" / "signature.json").is_file()
    assert not (sweep / "1" / "checkpoints").exists()  # failed before any work


def test_unknown_override_in_a_sweep_fails_before_any_job(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_command(["-m", "seed=0,1", "model.nonexistent=3", f"hydra.sweep.dir={sweep}"])
    assert done.returncode != 0
    assert "model.nonexistent" in done.stderr
    assert not (sweep / "0").exists()


def test_slurm_layout_is_checked_before_submitting(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_command(
        [
            "-m",
            "hydra/launcher=slurm",
            "trainer=ddp",
            "trainer.devices=4",
            "hydra.launcher.tasks_per_node=1",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert done.returncode == 2
    assert "memsig: error: hydra.launcher.tasks_per_node=1 but" in done.stderr
    assert "gpus_per_node=4" in done.stderr
    assert not (sweep / ".submitit").exists()  # nothing submitted


@pytest.mark.parametrize(
    "launcher, trainer, words",
    [
        ({"tasks_per_node": 2, "gpus_per_node": 4, "nodes": 1}, {"devices": 4}, "tasks_per_node=2"),
        (
            {"tasks_per_node": 2, "gpus_per_node": 2, "nodes": 1},
            {"devices": 4},
            "trainer.devices=4",
        ),
        (
            {"tasks_per_node": 2, "gpus_per_node": 2, "nodes": 2},
            {"devices": 2, "num_nodes": 1},
            "trainer.num_nodes=1",
        ),
    ],
)
def test_layout_rule(launcher, trainer, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        check_layout(launcher, trainer)
    good = {"tasks_per_node": 4, "gpus_per_node": 4, "nodes": 2}
    check_layout(good, {"devices": 4, "num_nodes": 2})  # the rule held: no error


@pytest.mark.parametrize(
    "override, words",
    [
        ("objective.view=layer9.h", "objective.view=layer9.h is not a probed view"),
        ("objective.metric=loss", "objective.metric=loss: must be one of"),
    ],
)
def test_an_objective_the_run_cannot_produce_fails_before_work(tiny_config, override, words):
    cfg = tiny_config(override)
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        prepare(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_local_ddp_inside_a_sweep_is_refused():
    with pytest.raises(ConfigError, match="hydra/launcher=slurm"):
        check_local_ddp_in_sweep({"devices": 2, "num_nodes": 1}, in_sweep=True)
    check_local_ddp_in_sweep({"devices": 2, "num_nodes": 1}, in_sweep=False)  # a single run
    check_local_ddp_in_sweep({"devices": 1, "num_nodes": 1}, in_sweep=True)  # one process
