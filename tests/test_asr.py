"""The speech experiment end to end on a tiny synthetic corpus: CTC training, frame caches with
forced-alignment targets, grapheme signatures per layer, the layer report, and reuse."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import TINY_SPEECH, compose_config
from memsig.pipeline.run import run
from memsig.runtime.errors import ConfigError
from memsig.signature.record import Signature


def speech_config(tmp_path, run_name: str, *overrides: str):
    return compose_config(
        tmp_path / run_name, [f"data.root={tmp_path / 'corpus'}", *overrides], TINY_SPEECH
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("asr")
    return tmp_path, run(speech_config(tmp_path, "run"))


def test_speech_signature_counts_graphemes_per_layer(trained):
    tmp_path, signature = trained
    run_dir = tmp_path / "run"
    stored = json.loads((run_dir / "signature.json").read_text())
    assert stored["data"]["unit"] == "grapheme"
    assert stored["data"]["vocab"] == [" ", "a", "b", "c", "d"]
    assert stored["offsets"] == [0, 1, 2]
    assert set(stored["model"]["metrics"]) == {"val/cer", "val/wer", "test/cer", "test/wer"}
    assert all(0 <= v <= 10 for v in stored["model"]["metrics"].values())
    assert list(stored["views"]) == [
        "input",
        "layer1.h",
        "layer1.c",
        "layer2.h",
        "layer2.c",
        "logits",
    ]
    assert stored["views"]["logits"]["dim"] == 6  # graphemes + blank
    assert stored["views"]["input"]["dim"] == 80 * 3  # stacked mel frames
    # the probe parts hold every grapheme of their transcripts
    from memsig.config.compose import build

    corpus = build(speech_config(tmp_path, "run").data)
    graphemes = sum(len(u.tokens) for u in corpus.parts["probe_test"])
    assert stored["data"]["probe_test_tokens"] == graphemes
    for view in stored["views"].values():
        assert all(0 <= a <= 1 for a in view["accuracy"])
    for name in ("layers.png", "layer_curves.png", "layers.csv", "signature.png"):
        assert (run_dir / name).stat().st_size > 0
    assert not (run_dir / "chars.json").exists()
    targets = np.load(run_dir / "cache" / "probe_test" / "targets.npz")
    anchors = targets["anchors"]
    # each frame's current grapheme lies in its own utterance and never moves backwards there
    ok = anchors >= 0
    assert ok.mean() > 0.5
    assert np.all((anchors[ok] >= targets["first"][ok]) & (anchors[ok] <= targets["last"][ok]))
    same = (targets["first"][1:] == targets["first"][:-1]) & ok[1:] & ok[:-1]
    assert np.all(np.diff(anchors)[same] >= 0)
    assert signature.views["layer2.h"].accuracy == stored["views"]["layer2.h"]["accuracy"]


def test_signature_stage_reuses_a_trained_encoder(trained, tmp_path):
    source, signature = trained
    ckpt = source / "run" / "checkpoints" / "base.ckpt"
    threads = torch.get_num_threads()
    again = run(
        compose_config(
            tmp_path / "again",
            [f"data.root={source / 'corpus'}", "stage=signature", f"base_ckpt={ckpt}"],
            TINY_SPEECH,
        )
    )
    assert torch.get_num_threads() == threads  # threads=1 holds for the run only
    assert again.model["metrics"] == signature.model["metrics"]
    assert again.offsets == signature.offsets
    loaded = Signature.load(tmp_path / "again" / "signature.json")
    assert loaded.data["unit"] == "grapheme"


def test_speech_config_errors_before_work(trained, tmp_path):
    source, _ = trained
    corpus = f"data.root={source / 'corpus'}"
    with pytest.raises(ConfigError, match="reference_orders"):
        run(compose_config(tmp_path / "a", [corpus, "probe.reference_orders=[3]"], TINY_SPEECH))
    with pytest.raises(ConfigError, match="lower probe.max_offset"):
        run(compose_config(tmp_path / "b", [corpus, "probe.max_offset=40"], TINY_SPEECH))
    assert not (tmp_path / "b" / "checkpoints").exists()
