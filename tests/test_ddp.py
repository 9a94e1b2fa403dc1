"""Both stages under DDP on 2 CPU processes (gloo), launched the way a user launches them
(`python run.py trainer=ddp ...`), against the same config in a single process; and the pieces
that make the reductions exact (rows that travel with their batch, sums added over ranks)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import (
    TINY,
    TINY_MARKOV,
    TINY_SPEECH,
    compose_config,
    offline_env,
    run_command,
    strict_json_errors,
    wandb_records,
)
from memsig.data.batches import EpochBatches
from memsig.extraction.alignment import FrameTargets
from memsig.models.checkpoint import file_digest
from memsig.pipeline.run import run
from memsig.probes.scores import HeadScores
from memsig.runtime.atomic import write_json_atomic

SMALL = [
    "model.training.max_epochs=3",
    "probe.max_offset=3",
    "++probe.max_epochs=4",  # ++: the trained kinds; ridge has no epochs
    "probe.bootstrap.resamples=200",
    "data.num_chars=20000",
]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
EXACT = 1e-4  # closed-form probes: DDP and one process differ only in float summation order
PROVENANCE = {"checkpoint", "source", "config"}  # paths and configs, which differ by design


def run_ddp(run_dir: Path, args: list[str], env: dict | None = None) -> dict:
    """`python run.py ARGS` on 2 processes; its signature.json."""
    done = run_command([*args, *DDP, f"hydra.run.dir={run_dir}"], env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting with 2 processes" in done.stderr + done.stdout
    return json.loads((run_dir / "signature.json").read_text())


def differences(a, b, path: str = "") -> list[tuple[str, float]]:
    """Every number of `a` and `b` (nested records of the same shape) with the absolute
    difference between them; anything else must be equal."""
    if isinstance(a, dict):
        assert set(a) == set(b), (path, set(a) ^ set(b))
        return [d for k in a if k not in PROVENANCE for d in differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list):
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) or isinstance(b, float):
        return [(path, math.inf if a is None or b is None else abs(a - b))]
    assert a == b, (path, a, b)
    return []


def assert_same_signature(ddp: dict, single: dict, tolerance: float) -> int:
    """Every number of the two signatures within `tolerance`; the count compared."""
    found = differences(ddp, single)
    worst = max(found, key=lambda d: d[1])
    assert worst[1] <= tolerance, worst
    return len(found)


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory) -> Path:
    """A tiny language model trained once, in one process."""
    directory = tmp_path_factory.mktemp("text-base")
    run(compose_config(directory, [*SMALL, "stage=base"]))
    return directory / "checkpoints" / "base.ckpt"


@pytest.mark.slow
def test_ddp_on_two_processes_matches_one_process(tmp_path):
    """Both stages under DDP with the trained (linear) probe and signatures during training."""
    ddp_dir = tmp_path / "ddp"
    during = ["probe.during_training.every_n_steps=1000", "probe.during_training.chars=2000"]
    ddp = run_ddp(ddp_dir, [*TINY, *TINY_MARKOV, *SMALL, *during, "logger=csv"])

    single_base = tmp_path / "single"
    run(compose_config(single_base, [*SMALL, *during, "stage=base"]))
    single_base_ckpt = torch.load(single_base / "checkpoints" / "base.ckpt", weights_only=True)
    # the base stage: batches split by rows, gradients averaged, val/bpc reduced over ranks
    assert ddp["model"]["metrics"]["val/bpc"] == pytest.approx(
        single_base_ckpt["metrics"]["val/bpc"], rel=1e-4
    )
    # training-time signatures: before the first step both runs hold the same weights
    step0 = {
        d: json.loads((d / "training_signature.json").read_text())["info_bits"]
        for d in (ddp_dir, single_base)
    }
    for view, rows in step0[single_base].items():
        np.testing.assert_allclose(step0[ddp_dir][view][0], rows[0], atol=EXACT)

    # the probe stage on the DDP run's checkpoint, in one process
    checkpoint = ddp_dir / "checkpoints" / "base.ckpt"
    single = run(
        compose_config(tmp_path / "again", [*SMALL, "stage=signature", f"base_ckpt={checkpoint}"])
    ).to_dict()
    # every probe-test position scored exactly once, summed over the ranks
    positions = single["data"]["probe_test_tokens"] - 3
    assert ddp["data"]["probe_test_positions"] == single["data"]["probe_test_positions"]
    assert ddp["data"]["probe_test_positions"] == positions
    # the same batches, split across ranks; gradients differ only in float summation order
    for view, scores in single["views"].items():
        assert ddp["views"][view]["accuracy"] == pytest.approx(scores["accuracy"], abs=0.01)
        assert ddp["views"][view]["xent_bits"] == pytest.approx(scores["xent_bits"], abs=0.01)
    intervals = ddp["intervals"]["views"]
    assert all(None not in v["capacity"] for v in intervals.values())
    assert any(s["last_significant_offset"] is not None for s in ddp["summary"].values())

    # rank 1 read the cache rank 0 wrote, and wrote no files of its own
    rank1_log = (ddp_dir / "train_ddp_process_1.log").read_text()
    assert "rank 1 reads the state cache" in rank1_log
    assert len(list((ddp_dir / "cache" / "probe_train").glob("manifest.json"))) == 1
    metrics = (ddp_dir / "csv" / "metrics.csv").read_text()
    assert metrics.count("\n") > 1 and not (ddp_dir / "csv" / "version_1").exists()


def test_closed_form_signature_under_ddp_equals_one_process(tmp_path, text_checkpoint):
    """probe=ridge: every number, intervals, control task, online code, conditioning and the
    untrained baseline included, the same on 2 processes as in one."""
    extras = [
        "probe=ridge",
        "probe.control=true",
        "probe.mdl=true",
        "probe.condition_on=1",
        "probe.untrained_baseline=true",
        "stage=signature",
        f"base_ckpt={text_checkpoint}",
    ]
    dirs = (tmp_path / "ddp", tmp_path / "single")
    ddp = run_ddp(dirs[0], [*TINY, *TINY_MARKOV, *SMALL, *extras])
    run(compose_config(dirs[1], [*SMALL, *extras]))
    single = json.loads((tmp_path / "single" / "signature.json").read_text())
    compared = assert_same_signature(ddp, single, EXACT)
    assert compared > 300  # scores, intervals, control, online code, conditioning, untrained
    untrained = [json.loads((d / "untrained" / "signature.json").read_text()) for d in dirs]
    assert_same_signature(*untrained, EXACT)
    assert ddp["data"]["probe_test_positions"] == ddp["data"]["probe_test_tokens"] - 3
    assert ddp["intervals"]["documents"] == single["intervals"]["documents"] > 2


@pytest.mark.slow
def test_speech_under_ddp_equals_one_process(tmp_path):
    """experiment=asr_layers on 2 processes, both stages: frame caches built once by rank 0,
    the checkpoint saved and logged once (the artifact the signature names); the signature on
    the same checkpoint in one process is the same (ridge: closed form)."""
    ddp_dir = tmp_path / "ddp"
    speech = [
        *TINY_SPEECH,
        f"data.root={tmp_path / 'corpus'}",
        "probe=ridge",
        "probe.bootstrap.resamples=200",
    ]
    ddp = run_ddp(ddp_dir, [*speech, "logger=wandb"], env=offline_env(tmp_path))
    checkpoint = ddp_dir / "checkpoints" / "base.ckpt"
    single_cfg = [*speech, "stage=signature", f"base_ckpt={checkpoint}"]
    run(compose_config(tmp_path / "single", single_cfg, tiny=[]))
    single = json.loads((tmp_path / "single" / "signature.json").read_text())
    assert_same_signature(ddp, single, EXACT)
    targets = FrameTargets.load(ddp_dir / "cache" / "probe_test" / "targets.npz")
    assert ddp["data"]["probe_test_positions"] == len(targets.valid_positions([0, 1, 2]))

    rank1_log = (ddp_dir / "train_ddp_process_1.log").read_text()
    assert "rank 1 reads the frame cache" in rank1_log
    records = wandb_records(ddp_dir / "wandb")
    models = [r["artifact"] for r in records if r["type"] == "artifact"]
    (model,) = [a for a in models if a["type"] == "model"]  # logged once, by rank 0
    (signature,) = [a for a in models if a["type"] == "signature"]
    assert model["name"] == f"base-{file_digest(checkpoint)[:16]}"
    assert json.loads(signature["metadata"])["checkpoint_artifact"] == model["name"]


def test_scores_summed_over_shards_equal_one_pass():
    """Two ranks' shares of every batch (rows r::2, as a sharded loader deals them), each
    scored by its own HeadScores, add up to one pass over every row: per-document sums
    included, because each batch carries its rows."""
    rng = np.random.default_rng(0)
    rows_total, views, offsets, classes = 23, 2, 3, 4
    documents = rng.integers(5, size=rows_total)
    nll = torch.as_tensor(rng.random((views, rows_total, offsets)))
    correct = torch.as_tensor(rng.random((views, rows_total, offsets)) > 0.5)
    targets = torch.as_tensor(rng.integers(classes, size=(rows_total, offsets)))

    def scored(batches: list[list[int]]) -> dict[str, torch.Tensor]:
        scores = HeadScores(views, offsets, classes, documents)
        for batch in batches:
            rows = torch.as_tensor(batch, dtype=torch.long)
            scores.update(nll[:, rows], correct[:, rows], targets[rows], rows)
        return dict(scores.metric_state)

    whole = scored(list(EpochBatches(rows_total, 8, shuffle=False, shard=False)))
    shares = []
    for rank in range(2):
        sampler = EpochBatches(rows_total, 8, shuffle=False, shard=True)
        sampler._world = lambda rank=rank: (rank, 2)  # what shard() answers on rank r
        shares.append(scored(list(sampler)))
    for name in ("nll", "correct", "count", "doc_nll", "doc_correct", "doc_count"):
        torch.testing.assert_close(shares[0][name] + shares[1][name], whole[name])
    assert float(whole["count"]) == rows_total


def test_unshuffled_sharded_passes_keep_every_item():
    """A scoring pass keeps every item across the ranks (the last batch of 1 item included,
    an empty batch on the other rank); a training pass drops a batch too small to split."""

    def dealt(shuffle: bool) -> list[list[list[int]]]:
        out = []
        for rank in range(2):
            sampler = EpochBatches(17, 8, shuffle=shuffle, shard=True)
            sampler._world = lambda rank=rank: (rank, 2)
            out.append(list(sampler))
            assert len(sampler) == len(out[-1])
        return out

    scoring = dealt(shuffle=False)
    assert len(scoring[0]) == len(scoring[1]) == 3  # the same number of batches on each rank
    assert sorted(i for rank in scoring for b in rank for i in b) == list(range(17))
    assert scoring[1][-1] == []
    training = dealt(shuffle=True)
    assert sum(len(b) for rank in training for b in rank) == 16


def test_json_files_are_strict_and_say_why_a_value_is_missing(tmp_path):
    path = tmp_path / "record.json"
    write_json_atomic(path, {"a": [1.0, float("nan")], "b": {"c": float("inf")}, "d": 2})

    def refuse(token: str) -> None:
        raise ValueError(token)

    record = json.loads(path.read_text(), parse_constant=refuse)
    assert record["a"] == [1.0, None] and record["b"] == {"c": None} and record["d"] == 2
    assert set(record["undefined"]) == {"a[1]", "b.c"}
    assert record["undefined"]["a[1]"].startswith("NaN")
    # the session-end scan of every test's JSON files flags what Python's json writes by default
    loose = tmp_path / "loose.json"
    loose.write_text(json.dumps({"x": float("nan")}))
    try:
        assert strict_json_errors(tmp_path) == [f"{loose}: non-standard token NaN"]
    finally:
        loose.unlink()  # not a file memsig wrote: kept out of the session-end scan
