"""Known-memory sources (repeat, copy), the configurable training target, and their bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from memsig.config.compose import build
from memsig.data.known_memory import (
    copy_corpus,
    repeat_conditional_bits,
    repeat_corpus,
    repeat_info_bits,
    repeat_stream,
)
from memsig.data.streams import IGNORE, StreamChunks
from memsig.models.checkpoint import (
    build_network,
    checkpoint_target,
    load_base_checkpoint,
    save_base_checkpoint,
)
from memsig.models.recurrent import StackedRNN
from memsig.pipeline.run import run
from memsig.runtime.errors import ConfigError

SPLIT = {"train": 0.6, "val": 0.1, "probe_train": 0.2, "probe_test": 0.1}


def _empirical_info_bits(x: np.ndarray, y: np.ndarray, vocab_size: int) -> float:
    """Plug-in mutual information of two symbol sequences, in bits."""
    joint = np.bincount(x * vocab_size + y, minlength=vocab_size**2).reshape(vocab_size, -1)
    joint = joint / joint.sum()
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log2(joint[nz] / outer[nz])).sum())


def test_repeat_stream_matches_a_step_by_step_generator():
    lag, p, vocab, n = 3, 0.4, 5, 2000
    fast = repeat_stream(lag, p, vocab, n, np.random.default_rng(7))
    rng = np.random.default_rng(7)  # same draws, in the same order, read one step at a time
    fresh, keep = rng.integers(vocab, size=n), rng.random(n) >= p
    slow = []
    for t in range(n):
        slow.append(int(fresh[t]) if t < lag or keep[t] else slow[t - lag])
    np.testing.assert_array_equal(fast, slow)


def test_repeat_source_links_only_inputs_lag_apart():
    lag, p, vocab = 3, 0.5, 4
    corpus = repeat_corpus(lag, p, vocab, 200_000, seed=0, split=SPLIT)
    stream = np.concatenate([corpus.parts[part] for part in SPLIT])
    rate = corpus.info["entropy_rate_bits"]
    assert rate == pytest.approx(2 - repeat_info_bits(p, vocab))
    for j in range(1, 2 * lag + 1):
        measured = _empirical_info_bits(stream[:-j], stream[j:], vocab)
        hops = j // lag if j % lag == 0 else None
        expected = repeat_info_bits(p**hops, vocab) if hops else 0.0
        assert measured == pytest.approx(expected, abs=0.01), j


def test_repeat_conditional_bits_closed_form():
    lag, p, vocab = 3, 0.3, 8
    # offsets 1..lag-1 are out of view of x_t and have no chain member in view: all log2 V
    for k in (1, 2):
        assert repeat_conditional_bits(k, 1, lag, p, vocab) == pytest.approx(math.log2(vocab))
    assert repeat_conditional_bits(0, 1, lag, p, vocab) == 0.0  # in view
    assert repeat_conditional_bits(3, 1, lag, p, vocab) == 0.0  # linked to x_t, in view
    one_hop = repeat_info_bits(p, vocab)
    assert repeat_conditional_bits(4, 1, lag, p, vocab) == pytest.approx(one_hop)
    assert repeat_conditional_bits(7, 1, lag, p, vocab) == pytest.approx(
        repeat_info_bits(p**2, vocab)
    )
    assert repeat_conditional_bits(7, 1, lag, p, vocab) < 0.05  # fades beyond lag + 3
    for k in range(12):  # a window of lag inputs leaves nothing for the state to add
        assert repeat_conditional_bits(k, lag, lag, p, vocab) == 0.0


def test_copy_corpus_labels_are_the_delayed_inputs():
    corpus = copy_corpus(delay=3, vocab_size=6, num_chars=4000, seed=1, split=SPLIT)
    assert corpus.target == 3
    train = corpus.parts["train"]
    chunks = StreamChunks(train, rows=4, seq_len=50, target=3, shard=False)
    inputs = torch.cat([chunks[i][0] for i in range(len(chunks))], dim=1)
    labels = torch.cat([chunks[i][1] for i in range(len(chunks))], dim=1)
    assert (labels[:, :3] == IGNORE).all()  # nothing to copy yet in each row
    torch.testing.assert_close(labels[:, 3:], inputs[:, :-3])
    counts = np.bincount(corpus.parts["probe_test"], minlength=6) / len(corpus.parts["probe_test"])
    assert np.abs(counts - 1 / 6).max() < 0.05  # uniform inputs


def test_language_model_labels_are_unchanged():
    tokens = np.arange(103)
    chunks = StreamChunks(tokens, rows=2, seq_len=10, shard=False)
    inputs, labels = chunks[0]
    torch.testing.assert_close(inputs, torch.tensor(np.stack([np.arange(10), np.arange(51, 61)])))
    torch.testing.assert_close(labels, inputs + 1)
    assert chunks.inputs.shape == (2, 51)


def test_checkpoint_records_the_training_target(tmp_path):
    net = StackedRNN(vocab_size=4, cell="gru", layers=1, hidden=8, embed=4)
    model_cfg = {"name": "gru"}
    save_base_checkpoint(tmp_path / "a.ckpt", net, model_cfg, list("abcd"), "char", {}, 5)
    assert checkpoint_target(load_base_checkpoint(tmp_path / "a.ckpt")) == 5
    old = load_base_checkpoint(tmp_path / "a.ckpt")
    del old["target"]  # checkpoints written before targets were configurable
    assert checkpoint_target(old) == -1


def test_count_models_refuse_a_copy_target(tiny_config):
    cfg = tiny_config("model=ngram", "data=copy", "data.num_chars=5000")
    with pytest.raises(ConfigError, match="model=ngram.*model=gru"):
        run(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=repeat", "data.lag=0"], "data.lag=0"),
        (["data=copy", "data.delay=0"], "data.delay=0"),
        (["data=repeat", "data.p=1.5"], "data.p=1.5"),
        (["data=repeat", "data.p=-0.1"], "data.p=-0.1"),
        (["probe.condition_on=-1"], "probe.condition_on=-1"),
        (["data=repeat", "data.vocab_size=1"], "data.vocab_size=1"),
        (["data=copy", "data.delay=5", "data.num_chars=5"], "data.num_chars=5"),
    ],
)
def test_bad_known_memory_settings_are_clear_errors(tiny_config, overrides, message):
    cfg = tiny_config(*overrides)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")) as caught:
        run(cfg)
    assert "e.g." in str(caught.value)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_a_run_dir_holding_a_model_of_another_task_is_not_reused(tiny_config):
    cfg = tiny_config("data=copy", "data.num_chars=5000")
    corpus = build(cfg.data)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    net = build_network(model_cfg, len(corpus.vocab))
    path = Path(cfg.paths.output_dir) / "checkpoints" / "base.ckpt"
    path.parent.mkdir(parents=True)
    save_base_checkpoint(path, net, model_cfg, list(corpus.vocab), "char", {}, target=-1)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=r"made from other inputs \(target: -1 -> "):
        run(cfg)
    assert path.read_bytes() == before
