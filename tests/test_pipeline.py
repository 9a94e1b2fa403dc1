"""End to end: compose the real configs, train, probe, and read the signature back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import compose_config
from memsig.pipeline.run import run
from memsig.runtime.errors import ConfigError, MemsigError
from memsig.signature.record import SCHEMA, capacity

TOP_KEYS = {"schema", "model", "data", "probe", "offsets", "baseline", "views"}


@pytest.fixture(scope="module")
def markov_run(tmp_path_factory):
    """One tiny default-style run (lstm on an order-2 Markov source), shared by several tests."""
    out = tmp_path_factory.mktemp("markov") / "run"
    cfg = compose_config(out)
    signature = run(cfg)
    return cfg, out, signature


def test_signature_json_follows_the_schema(markov_run):
    cfg, out, _ = markov_run
    raw = json.loads((out / "signature.json").read_text())
    assert set(raw) >= TOP_KEYS
    assert raw["schema"] == SCHEMA
    assert raw["offsets"] == list(range(7))
    model, data = raw["model"], raw["data"]
    assert model["name"] == "lstm" and model["params"] > 0
    assert model["checkpoint"].endswith("checkpoints/base.ckpt")
    assert set(model["metrics"]) == {"val/bpc"}
    assert data["name"] == "markov" and data["unit"] == "char" and data["vocab"] == list("abcdef")
    assert data["probe_train_tokens"] == 8000 and data["probe_test_tokens"] == 4000
    assert raw["probe"]["kind"] == "linear"
    for key in ("majority_accuracy", "prior_entropy_bits"):
        assert len(raw["baseline"][key]) == 7
    assert list(raw["views"]) == ["layer1.h", "layer1.c", "logits"]
    assert set(raw["baseline"]) == {"majority_accuracy", "prior_entropy_bits"}
    assert set(raw["health"]) == {"ok", "noise", "below_prior", "below_majority", "too_little_data"}
    for key in ("l2", "prior_heads"):  # per view, one entry per offset
        assert {v: len(x) for v, x in raw["probe"][key].items()} == dict.fromkeys(raw["views"], 7)
    for view, scores in raw["views"].items():
        assert set(scores) == {"dim", "accuracy", "xent_bits", "info_bits", "capacity"}
        assert scores["dim"] == (6 if view == "logits" else 48)
        for key in ("accuracy", "xent_bits", "info_bits"):
            assert len(scores[key]) == 7
        prior = raw["baseline"]["prior_entropy_bits"]
        expected = [p - x for p, x in zip(prior, scores["xent_bits"], strict=True)]
        assert scores["info_bits"] == pytest.approx(expected)
        assert scores["capacity"] == pytest.approx(capacity(raw["offsets"], expected, prior))


def test_markov_calibration(markov_run):
    """A trained LM holds the last n characters, and less beyond them."""
    _, out, signature = markov_run
    source = signature.data["source"]
    assert signature.model["metrics"]["val/bpc"] < source["entropy_rate_bits"] + 0.15
    order = int(source["order"])
    h = signature.views["layer1.h"]
    for k in range(order):
        assert h.accuracy[k] >= 0.9, (k, h.accuracy)
    assert max(h.accuracy[order + 2 :]) < min(h.accuracy[:order]) - 0.1
    assert h.info_bits[-1] < 0.5 * h.info_bits[0]


def test_outputs_land_in_the_run_dir(markov_run):
    _, out, signature = markov_run
    for name in ("checkpoints/base.ckpt", "signature.json", "signature.csv", "config.yaml"):
        assert (out / name).is_file(), name
    assert (out / "signature.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "signature.csv") as handle:
        rows = list(csv.DictReader(handle))
    baselines = [r for r in rows if r["view"] == "baseline"]
    assert len(baselines) == 2 * 7  # majority accuracy and prior entropy per offset
    core = [r for r in rows if r["metric"] in ("accuracy", "xent_bits", "info_bits")]
    assert len(core) == 3 * 3 * 7  # views x metrics x offsets
    intervals = [r for r in rows if r["metric"].startswith("intervals.") and r["offset"]]
    assert len(intervals) == 3 * 4 * 7  # accuracy and information, lower and upper ends
    assert {r["metric"] for r in rows if not r["offset"]} >= {"half_life", "capacity"}
    row = next(r for r in rows if r["view"] == "layer1.h" and r["metric"] == "accuracy")
    assert float(row["value"]) == pytest.approx(signature.views["layer1.h"].accuracy[0])


def test_rerun_skips_completed_work(markov_run):
    cfg, out, signature = markov_run
    ckpt = out / "checkpoints" / "base.ckpt"
    before = (ckpt.stat().st_mtime_ns, (out / "signature.json").stat().st_mtime_ns)
    again = run(cfg)
    after = (ckpt.stat().st_mtime_ns, (out / "signature.json").stat().st_mtime_ns)
    assert after == before
    assert again.to_dict() == signature.to_dict()


def test_signature_stage_reuses_a_checkpoint(markov_run, tiny_config):
    _, out, _ = markov_run
    ckpt = out / "checkpoints" / "base.ckpt"
    cfg = tiny_config("stage=signature", f"base_ckpt={ckpt}", "probe.offsets=[-1,0,3]", run="reuse")
    signature = run(cfg)
    assert signature.offsets == [-1, 0, 3]
    assert signature.model["checkpoint"] == str(ckpt)
    reuse_dir = Path(cfg.paths.output_dir)
    assert not (reuse_dir / "checkpoints" / "base.ckpt").exists()  # nothing trained here
    assert not (reuse_dir / "checkpoints" / "lightning").exists()
    assert signature.views["layer1.h"].accuracy[1] >= 0.9  # offset 0


@pytest.mark.slow
def test_gru_on_a_text_file(tiny_config, shakespeare_dir, tmp_path):
    text = (shakespeare_dir / "tinyshakespeare.txt").read_text()[:200_000]
    path = tmp_path / "play.txt"
    path.write_text(text)
    cfg = tiny_config(
        "model=gru",
        "data=text",
        f"data.path={path}",
        "probe.max_offset=12",
        "model.training.max_epochs=2",
        "model.hidden=64",
    )
    signature = run(cfg)
    h = signature.views["layer1.h"]
    majority = signature.baseline["majority_accuracy"]
    assert h.accuracy[0] >= 0.95
    assert h.accuracy[0] > h.accuracy[4] > h.accuracy[12] - 0.02
    assert all(a >= m - 0.02 for a, m in zip(h.accuracy, majority, strict=True))


@pytest.mark.parametrize(
    ("overrides", "error", "words"),
    [
        (["probe.offsets=[0,1,x]"], ConfigError, ["probe.offsets", "'x'", "integers"]),
        (["probe.max_offset=-3"], ConfigError, ["probe.max_offset=-3"]),
        (["probe.views=[layer9.h]"], ConfigError, ["layer9.h", "available views"]),
        (
            ["data=text", "data.path=/nonexistent/book.txt"],
            MemsigError,
            ["/nonexistent/book.txt", "data.path"],
        ),
        (["stage=signature"], ConfigError, ["base_ckpt"]),
        (["stage=everything"], ConfigError, ["stage=everything"]),
        (["probe.max_offset=9000"], ConfigError, ["probe.max_offset"]),
    ],
)
def test_bad_input_fails_before_training(tiny_config, overrides, error, words):
    cfg = tiny_config(*overrides)
    with pytest.raises(error) as caught:
        run(cfg)
    for word in words:
        assert word in str(caught.value)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_base_ckpt_that_is_not_a_memsig_checkpoint(tiny_config, tmp_path):
    import torch

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    for path in (junk, other, tmp_path / "missing.ckpt"):
        cfg = tiny_config("stage=signature", f"base_ckpt={path}")
        with pytest.raises(MemsigError) as caught:
            run(cfg)
        assert str(path) in str(caught.value) and "base.ckpt" in str(caught.value)


class _Exploit:
    """Unpickling this runs code: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (self.marker,))


def test_a_checkpoint_that_runs_code_is_refused(tiny_config, tmp_path):
    import torch

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"format": "memsig/base@1", "payload": _Exploit(marker)}, evil)
    cfg = tiny_config("stage=signature", f"base_ckpt={evil}")
    with pytest.raises(MemsigError, match="not a memsig base checkpoint"):
        run(cfg)
    assert not marker.exists()


def test_bf16_mixed_precision_trains_and_probes(markov_run, tiny_config):
    """trainer.precision=bf16-mixed (autocast, the GPU trainer's default; here on the CPU) runs
    both stages, and the model still holds the characters the source forces it to hold."""
    _, _, full_precision = markov_run
    signature = run(tiny_config("trainer.precision=bf16-mixed", run="bf16"))
    order = int(signature.data["source"]["order"])
    h, reference = signature.views["layer1.h"], full_precision.views["layer1.h"]
    for k in range(order):
        assert h.accuracy[k] >= 0.9 and abs(h.accuracy[k] - reference.accuracy[k]) < 0.05, k
    assert signature.model["metrics"]["val/bpc"] < full_precision.model["metrics"]["val/bpc"] + 0.1


@pytest.mark.slow
def test_same_seed_same_signature(tiny_config):
    overrides = ["probe.max_offset=2", "model.training.max_epochs=2", "probe.max_epochs=3"]
    first = run(tiny_config(*overrides, run="a"))
    second = run(tiny_config(*overrides, run="b"))
    strip = {"checkpoint"}
    one, two = first.to_dict(), second.to_dict()
    for raw in (one, two):
        raw["model"] = {k: v for k, v in raw["model"].items() if k not in strip}
        raw["probe"]["config"] = None
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)


def test_reused_checkpoint_must_match_the_data_vocabulary(markov_run, tiny_config):
    _, out, _ = markov_run
    ckpt = out / "checkpoints" / "base.ckpt"
    cfg = tiny_config("stage=signature", f"base_ckpt={ckpt}", "data.vocab_size=5", run="vocab")
    with pytest.raises(ConfigError, match="vocabulary"):
        run(cfg)


def test_a_run_dir_holding_another_model_is_not_overwritten(markov_run):
    cfg, out, _ = markov_run
    stamp = (out / "checkpoints" / "base.ckpt").stat().st_mtime_ns
    other = compose_config(out, ["model.hidden=32"])
    with pytest.raises(ConfigError, match=r"made from other inputs \(model.hidden: "):
        run(other)
    assert (out / "checkpoints" / "base.ckpt").stat().st_mtime_ns == stamp


def test_wandb_online_without_credentials_is_a_clear_error(tiny_config, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    cfg = tiny_config("logger=wandb", "logger.wandb.offline=false")
    with pytest.raises(ConfigError, match="WANDB_API_KEY"):
        run(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


@pytest.mark.slow
def test_loggers_record_the_composed_config(tiny_config):
    import yaml

    cfg = tiny_config("logger=csv", "probe.max_offset=1", "model.training.max_epochs=1")
    run(cfg)
    hparams = yaml.safe_load((Path(cfg.paths.output_dir) / "csv" / "hparams.yaml").read_text())
    assert hparams["model"]["name"] == "lstm" and hparams["probe"]["max_offset"] == 1
