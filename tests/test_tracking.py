"""Tracking read back with each tool's own reader: the offline W&B run (wandb's transaction-log
inspector), TensorBoard's event reader and the CSV logger's file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import compose_config, wandb_records
from memsig.models.checkpoint import file_digest
from memsig.pipeline.run import run


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """One tiny run logged to W&B (offline), CSV and TensorBoard at once."""
    out = tmp_path_factory.mktemp("tracked")
    patch = pytest.MonkeyPatch()
    patch.delenv("WANDB_API_KEY", raising=False)
    patch.setenv("WANDB_DATA_DIR", str(out / "wandb-data"))  # artifact staging
    cfg = compose_config(
        out / "run",
        [
            "logger=[wandb,csv,tensorboard]",
            "logger.wandb.tags=[smoke,tiny]",
            "probe.max_offset=2",
            "model.training.max_epochs=2",
        ],
    )
    try:
        run(cfg)
    finally:
        patch.undo()
    return Path(cfg.paths.output_dir)


def test_offline_wandb_run_holds_table_figure_artifacts_and_config(tracked_run):
    records = wandb_records(tracked_run / "wandb")
    history = {}
    for record in records:
        if record["type"] == "history":
            history.update(record["history"]["item"])
    assert history["signature/table._type"] == "table-file"
    assert history["signature/table.ncols"] == 7 and history["signature/table.nrows"] == 9
    assert history["signature/figure._type"] == "image-file"
    (offline,) = (tracked_run / "wandb").glob("offline-run-*")
    table = json.loads((offline / "files" / history["signature/table.path"]).read_text())
    accuracy = {(row[0], row[1]): row[2] for row in table["data"]}
    signature = json.loads((tracked_run / "signature.json").read_text())
    capacity = signature["views"]["layer1.h"]["capacity"]
    assert history["signature/layer1.h/capacity"] == pytest.approx(capacity)
    assert accuracy[("layer1.h", 1)] == pytest.approx(signature["views"]["layer1.h"]["accuracy"][1])

    artifacts = {r["artifact"]["type"]: r["artifact"] for r in records if r["type"] == "artifact"}
    model, sig = artifacts["model"], artifacts["signature"]
    sha = file_digest(tracked_run / "checkpoints" / "base.ckpt")
    assert model["name"] == f"base-{sha[:16]}"
    assert [c["path"] for c in model["manifest"]["contents"]] == ["base.ckpt"]
    assert {c["path"] for c in sig["manifest"]["contents"]} == {
        "signature.json",
        "signature.csv",
        "signature.png",
        "chars.json",
    }
    lineage = json.loads(sig["metadata"])
    assert lineage["checkpoint_artifact"] == model["name"]
    assert lineage["checkpoint_sha256"] == sha

    (run_record,) = [r["run"] for r in records if r["type"] == "run"]
    assert run_record["tags"] == ["smoke", "tiny"]
    config = {}
    for record in records:
        if record["type"] == "config":
            config.update(record["config"]["update"])
    assert config["model"]["name"] == "lstm" and config["probe"]["max_offset"] == 2
    assert config["objective"] == {"metric": "capacity", "view": None}


def test_tensorboard_and_csv_hold_the_same_scalars(tracked_run):
    with open(tracked_run / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    from_csv = {}
    for row in rows:
        for key, value in row.items():
            if key not in ("step", "epoch") and value != "":
                from_csv.setdefault(key, []).append(float(value))
    events = EventAccumulator(str(tracked_run / "tensorboard"))
    events.Reload()
    from_tensorboard = {
        tag: [e.value for e in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if tag != "epoch"
    }
    assert "val/bpc" in from_csv and "signature/layer1.h/capacity" in from_csv
    assert set(from_tensorboard) == set(from_csv)
    for tag, values in from_csv.items():
        assert sorted(from_tensorboard[tag]) == pytest.approx(sorted(values), rel=1e-6), tag
