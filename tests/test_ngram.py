"""Context models (count n-gram, neural window) and the local-context reference signature."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import memsig.config.compose
from memsig.measures.local_context import check_orders
from memsig.models.checkpoint import (
    build_network,
    load_base_checkpoint,
    restore_network,
    save_base_checkpoint,
)
from memsig.models.context import PAD
from memsig.models.ngram import NGramLM, bits_per_char
from memsig.models.window import WindowLM
from memsig.pipeline.run import run
from memsig.runtime.errors import ConfigError


def slow_kneser_ney(tokens: list[int], order: int, vocab_size: int):
    """Interpolated Kneser-Ney written out with dictionaries, one probability at a time."""
    grams = {
        m: Counter(tuple(tokens[i : i + m]) for i in range(len(tokens) - m + 1))
        for m in range(1, order + 1)
    }
    counts = {order: grams[order]}
    for m in range(1, order):
        counts[m] = Counter(g[1:] for g in grams[m + 1])

    def discount(m):
        values = list(counts[m].values())
        n1, n2 = values.count(1), values.count(2)
        return min(max(n1 / (n1 + 2 * n2), 0.1), 0.9) if n1 + n2 else 0.5

    def prob(m, history, w):
        if m == 0:
            return 1.0 / vocab_size
        table = counts[m]
        rows = {g: c for g, c in table.items() if g[:-1] == history}
        total = sum(rows.values())
        lower = prob(m - 1, history[1:], w)
        if total == 0:
            return lower
        d = discount(m)
        return max(rows.get(history + (w,), 0) - d, 0) / total + d * len(rows) / total * lower

    return prob


def ngram_probs(model: NGramLM, window: tuple[int, ...]) -> np.ndarray:
    """P(next | window) through the model's public forward (window = last order-1 tokens)."""
    state = torch.tensor([[PAD, *window[:-1]]])
    logp, _ = model(torch.tensor([[window[-1]]]), state)
    return logp[0, 0].exp().double().numpy()


@pytest.mark.parametrize("order", [1, 2, 3])
def test_ngram_matches_slow_reference_and_sums_to_one(order):
    vocab_size = 5
    tokens = np.random.default_rng(order).integers(0, vocab_size - 1, 60)  # symbol 4 unseen
    model = NGramLM(vocab_size, order)
    model.fit(tokens)
    reference = slow_kneser_ney(tokens.tolist(), order, vocab_size)
    windows = list(itertools.product(range(vocab_size), repeat=max(order - 1, 1)))
    seen = {tuple(tokens[i : i + order - 1]) for i in range(len(tokens))}
    assert any(w not in seen for w in windows) or order == 1  # unseen contexts are covered
    for window in windows:
        probs = ngram_probs(model, window)
        assert probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert (probs > 0).all()
        history = window if order > 1 else ()
        expected = [reference(order, history, w) for w in range(vocab_size)]
        np.testing.assert_allclose(probs, expected, rtol=1e-5)


def test_ngram_short_history_backs_off_to_shorter_context():
    model = NGramLM(4, order=3)
    model.fit(np.array([0, 1, 2, 3] * 20))
    logp, _ = model(torch.tensor([[1]]))  # one character of history only
    state = torch.tensor([[PAD, PAD]])
    bigram = model(torch.tensor([[1]]), state)[0]
    torch.testing.assert_close(logp, bigram)
    assert logp[0, 0].exp().argmax().item() == 2


def test_ngram_beats_unigram_on_markov_text():
    from memsig.data.markov import markov_corpus

    split = {"train": 0.8, "val": 0.1, "probe_train": 0.05, "probe_test": 0.05}
    corpus = markov_corpus(2, 6, 3, 30_000, 0, split)
    bpc = {}
    for order in (1, 3):
        model = NGramLM(6, order)
        model.fit(corpus.parts["train"])
        bpc[order] = bits_per_char(model, corpus.parts["val"], chunk=1000)
    assert bpc[3] < bpc[1] - 0.5
    assert bpc[3] == pytest.approx(corpus.info["entropy_rate_bits"], abs=0.1)


@pytest.mark.parametrize("make", [lambda: NGramLM(6, 4), lambda: WindowLM(6, 4, hidden=8)])
def test_carrying_state_equals_whole_stream(make):
    model = make().eval()
    if isinstance(model, NGramLM):
        model.fit(np.random.default_rng(0).integers(0, 6, 500))
    tokens = torch.randint(0, 6, (3, 40))
    whole, _ = model.views(tokens)
    first, state = model.views(tokens[:, :17])
    second, _ = model.views(tokens[:, 17:], state)
    for view, dim in model.view_dims.items():
        assert whole[view].shape == (3, 40, dim)
        torch.testing.assert_close(torch.cat([first[view], second[view]], 1), whole[view])


def test_context_view_is_the_window_one_hot():
    model = NGramLM(4, order=3)
    model.fit(np.arange(40) % 4)
    views, state = model.views(torch.tensor([[2, 3, 1]]))
    context = views["context"][0].view(3, 2, 4)  # positions x window slots (oldest first) x V
    assert context[0, 0].sum() == 0 and context[0, 1].argmax() == 2  # nothing before the start
    assert context[2, 0].argmax() == 3 and context[2, 1].argmax() == 1
    assert state.tolist() == [[3, 1]]
    logits_only, _ = model.views(torch.tensor([[2, 3, 1]]), only={"logits"})
    assert "context" not in logits_only
    torch.testing.assert_close(logits_only["logits"], views["logits"])


def test_ngram_checkpoint_round_trip(tmp_path):
    cfg = {"net": {"_target_": "memsig.models.ngram.NGramLM", "_partial_": True, "order": 3}}
    model = build_network(cfg, 5)
    model.fit(np.random.default_rng(0).integers(0, 5, 200))
    save_base_checkpoint(tmp_path / "base.ckpt", model, cfg, list("abcde"), "char", {})
    restored = restore_network(load_base_checkpoint(tmp_path / "base.ckpt"))
    tokens = torch.randint(0, 5, (2, 30))
    torch.testing.assert_close(restored(tokens)[0], model(tokens)[0])


def test_order_below_one_is_a_config_error():
    cfg = {"net": {"_target_": "memsig.models.ngram.NGramLM", "_partial_": True, "order": 0}}
    with pytest.raises(ConfigError, match=r"order=0: must be >= 1.*model\.order=5"):
        build_network(cfg, 5)
    cfg["net"]["_target_"] = "memsig.models.window.WindowLM"
    with pytest.raises(ConfigError, match="order=0: must be >= 2"):
        build_network(cfg, 5)


@pytest.mark.parametrize("orders", [3, [0], ["a"], [True]])
def test_bad_reference_orders(orders):
    with pytest.raises(ConfigError, match="probe.reference_orders"):
        check_orders(orders, 10)


def compose_tiny(tmp_path, *overrides):
    with initialize_config_dir(
        config_dir=str(memsig.config.compose.CONFIG_DIR), version_base="1.3"
    ):
        return compose(
            config_name="config",
            overrides=[
                "data.order=1",  # order-1 source: x_{t-k} beyond the window depends on one char
                "data.vocab_size=4",
                "data.branching=2",
                "data.num_chars=12000",
                "probe.max_offset=5",
                "probe.reference_orders=[2]",
                "probe.passage_chars=100",
                "logger=none",
                "trainer.enable_progress_bar=false",
                f"paths.output_dir={tmp_path}",
                *overrides,
            ],
        )


@pytest.mark.slow
def test_ngram_context_signature_is_a_step(tmp_path):
    signature = run(compose_tiny(tmp_path, "model=ngram", "model.order=3"))
    accuracy = signature.views["context"].accuracy
    reference = signature.extra["local_context"]["2"]["accuracy"]
    assert min(accuracy[:2]) >= 0.99  # offsets 0..n-2 are in the window
    np.testing.assert_allclose(accuracy[2:], reference[2:], atol=0.03)
    saved = json.loads((tmp_path / "signature.json").read_text())
    assert saved["local_context"]["2"]["accuracy"] == reference
    assert saved["model"]["metrics"]["val/bpc"] < 1.5  # log2(branching) = 1 bounds the source
    assert (tmp_path / "signature.png").is_file() and (tmp_path / "chars.json").is_file()


@pytest.mark.slow
def test_window_model_trains_end_to_end(tmp_path):
    cfg = compose_tiny(
        tmp_path, "model=window", "model.order=3", "model.hidden=16", "model.training.max_epochs=1"
    )
    signature = run(cfg)
    assert list(signature.views) == ["layer1.h", "layer2.h", "logits"]
    assert signature.views["layer1.h"].accuracy[0] > 0.9
