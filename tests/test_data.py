"""Corpora: block splitting, the Markov calibration source, text files and Tiny Shakespeare."""

import io
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from memsig.data.corpus import PARTS, split_blocks
from memsig.data.markov import markov_corpus, markov_table
from memsig.data.text import UNK, encode, text_corpus
from memsig.data.tinyshakespeare import FILENAME, tinyshakespeare_corpus
from memsig.runtime.errors import ConfigError, MemsigError

SPLIT = {"train": 0.7, "val": 0.1, "probe_train": 0.1, "probe_test": 0.1}
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tests must not use the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def stream_of(corpus):
    return np.concatenate([corpus.parts[part] for part in PARTS])


# --- split_blocks -----------------------------------------------------------------------------


def test_split_blocks_contiguous_in_order_and_sized():
    tokens = np.arange(1000)
    parts = split_blocks(tokens, SPLIT)
    assert list(parts) == list(PARTS)
    assert [len(parts[p]) for p in PARTS] == [700, 100, 100, 100]
    np.testing.assert_array_equal(np.concatenate([parts[p] for p in PARTS]), tokens)
    assert all(np.shares_memory(parts[p], tokens) for p in PARTS)


@pytest.mark.parametrize(
    ("fractions", "key"),
    [
        ({**SPLIT, "val": 0.0, "train": 0.8}, "data.split.val"),
        ({**SPLIT, "probe_test": -0.1, "train": 0.9}, "data.split.probe_test"),
        ({"train": 0.8, "val": 0.1, "probe_train": 0.1}, "data.split.probe_test"),
        ({**SPLIT, "test": 0.0}, "data.split.test"),
        ({**SPLIT, "train": 0.75}, "data.split.train"),
        (
            {**SPLIT, "train": 0.989, "val": 0.001, "probe_train": 0.005, "probe_test": 0.005},
            "data.split.val",
        ),
    ],
)
def test_split_blocks_rejects_bad_fractions(fractions, key):
    with pytest.raises(ConfigError, match=key):
        split_blocks(np.arange(1000), fractions)


# --- markov -----------------------------------------------------------------------------------


def markov(order=2, vocab_size=4, branching=3, num_chars=20_000, seed=0):
    return markov_corpus(order, vocab_size, branching, num_chars, seed, SPLIT)


def contexts_and_next(stream, order, vocab_size):
    """Context index (oldest character most significant) and next symbol for every t >= order."""
    n = len(stream)
    ctx = sum(stream[order - 1 - i : n - 1 - i] * vocab_size**i for i in range(order))
    return ctx, stream[order:]


def test_markov_is_reproducible_from_its_seed():
    a, b, c = markov(seed=1), markov(seed=1), markov(seed=2)
    assert a.fingerprint() == b.fingerprint() and a.info == b.info
    assert a.fingerprint() != c.fingerprint()
    assert not np.array_equal(a.parts["train"], c.parts["train"])
    assert a.vocab == ("a", "b", "c", "d") and a.unit == "char"
    assert all(part.dtype == np.int64 for part in a.parts.values())


def test_markov_follows_its_table():
    order, vocab_size, branching, seed = 2, 4, 3, 3
    corpus = markov(order, vocab_size, branching, num_chars=200_000, seed=seed)
    table = markov_table(order, vocab_size, branching, np.random.default_rng(seed))
    ctx, nxt = contexts_and_next(stream_of(corpus), order, vocab_size)
    assert (table.allowed[ctx] == nxt[:, None]).any(axis=1).all()
    counts = np.zeros((vocab_size**order, vocab_size))
    np.add.at(counts, (ctx, nxt), 1)
    expected = np.zeros_like(counts)
    np.put_along_axis(expected, table.allowed, table.probs, axis=1)
    visits = counts.sum(axis=1, keepdims=True)
    assert visits.min() > 100
    standard_error = np.sqrt(expected * (1 - expected) / visits)
    assert (np.abs(counts / visits - expected) <= 5 * standard_error + 0.005).all()


def test_markov_entropy_rate_matches_the_sample():
    order, vocab_size, branching, seed = 3, 5, 3, 4
    corpus = markov(order, vocab_size, branching, num_chars=300_000, seed=seed)
    table = markov_table(order, vocab_size, branching, np.random.default_rng(seed))
    ctx, nxt = contexts_and_next(stream_of(corpus), order, vocab_size)
    k = np.argmax(table.allowed[ctx] == nxt[:, None], axis=1)
    empirical = -np.log2(table.probs[ctx, k]).mean()
    assert corpus.info["empirical_conditional_entropy_bits"] == pytest.approx(empirical, abs=1e-9)
    assert corpus.info["entropy_rate_bits"] == pytest.approx(empirical, abs=0.02)
    assert 0 < corpus.info["entropy_rate_bits"] < np.log2(branching)
    assert corpus.info["order"] == 3 and corpus.info["branching"] == 3


def test_markov_entropy_rate_matches_eigenvector():
    order, vocab_size, branching, seed = 2, 3, 2, 5
    corpus = markov(order, vocab_size, branching, seed=seed)
    table = markov_table(order, vocab_size, branching, np.random.default_rng(seed))
    num_contexts = vocab_size**order
    transition = np.zeros((num_contexts, num_contexts))
    for c in range(num_contexts):
        for x, p in zip(table.allowed[c], table.probs[c], strict=True):
            transition[c, (c * vocab_size + x) % num_contexts] += p
    values, vectors = np.linalg.eig(transition.T)
    unit = np.isclose(values, 1)
    assert unit.sum() == 1  # irreducible: the stationary distribution is unique
    pi = np.real(vectors[:, unit][:, 0])
    pi /= pi.sum()
    h = -(transition * np.log2(np.where(transition > 0, transition, 1))).sum(axis=1)
    assert corpus.info["entropy_rate_bits"] == pytest.approx(pi @ h, abs=1e-9)


def test_markov_without_choice_has_zero_entropy():
    corpus = markov(order=3, vocab_size=6, branching=1, seed=6)
    assert corpus.info["entropy_rate_bits"] == 0
    assert corpus.info["empirical_conditional_entropy_bits"] == 0


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"order": 0}, "data.order=0"),
        ({"vocab_size": 1}, "data.vocab_size=1"),
        ({"vocab_size": 37, "branching": 2}, "data.vocab_size=37"),
        ({"branching": 0}, "data.branching=0"),
        ({"branching": 5}, "data.branching=5"),
        ({"order": 12, "vocab_size": 4}, "data.order=12"),
        ({"num_chars": 2}, "data.num_chars=2"),
        ({"num_chars": 12}, "data.num_chars=12"),
    ],
)
def test_markov_rejects_bad_values(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        markov(**kwargs)


# --- text -------------------------------------------------------------------------------------


def test_text_vocab_comes_from_train_block(tmp_path):
    train, rest = "abcab ba" * 100, "abcz" + "é" * 796
    path = tmp_path / "t.txt"
    path.write_text(train + rest, encoding="utf-8")
    corpus = text_corpus(
        str(path), {"train": 0.5, "val": 0.1, "probe_train": 0.2, "probe_test": 0.2}
    )
    assert corpus.vocab == (UNK, " ", "a", "b", "c")
    assert "".join(corpus.vocab[i] for i in corpus.parts["train"]) == train
    np.testing.assert_array_equal(corpus.parts["val"][:4], [2, 3, 4, 0])
    assert (corpus.parts["probe_test"] == 0).all()
    np.testing.assert_array_equal(encode("cab?", corpus.vocab), [4, 2, 3, 0])


def test_text_missing_file(tmp_path):
    path = tmp_path / "missing.txt"
    with pytest.raises(MemsigError, match="missing.txt.*data.path=FILE"):
        text_corpus(str(path), SPLIT)


def test_text_invalid_utf8(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"hello world " * 10 + b"\xff" + b"more")
    with pytest.raises(MemsigError, match=r"bad.txt.*byte offset 120"):
        text_corpus(str(path), SPLIT)


def test_text_too_short(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("abcde", encoding="utf-8")
    with pytest.raises(MemsigError, match="short.txt"):
        text_corpus(str(path), SPLIT)


# --- tinyshakespeare --------------------------------------------------------------------------


def test_tinyshakespeare_loads_from_shared_data():
    corpus = tinyshakespeare_corpus(str(SHARED_DATA), SPLIT, download=False)
    assert corpus.name == "tinyshakespeare"
    assert 1_100_000 < sum(len(part) for part in corpus.parts.values()) < 1_120_000
    assert 60 <= len(corpus.vocab) <= 67


def test_tinyshakespeare_detects_corruption(tmp_path):
    data = bytearray((SHARED_DATA / FILENAME).read_bytes())
    data[1000:1003] = b"XYZ"
    (tmp_path / FILENAME).write_bytes(bytes(data))
    with pytest.raises(MemsigError, match="corrupt.*sha256"):
        tinyshakespeare_corpus(str(tmp_path), SPLIT)


def test_tinyshakespeare_absent_without_download(tmp_path):
    with pytest.raises(MemsigError, match="does not exist"):
        tinyshakespeare_corpus(str(tmp_path), SPLIT, download=False)


def serve(monkeypatch, data):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(data))


def test_tinyshakespeare_download(tmp_path, monkeypatch):
    data = (SHARED_DATA / FILENAME).read_bytes()
    serve(monkeypatch, data)
    root = tmp_path / "new"
    corpus = tinyshakespeare_corpus(str(root), SPLIT)
    assert (root / FILENAME).read_bytes() == data
    assert [p.name for p in root.iterdir()] == [FILENAME]
    assert corpus.fingerprint() == tinyshakespeare_corpus(str(SHARED_DATA), SPLIT).fingerprint()


def test_tinyshakespeare_download_with_wrong_bytes_leaves_nothing(tmp_path, monkeypatch):
    serve(monkeypatch, b"not shakespeare\n" * 1000)
    with pytest.raises(MemsigError, match="sha256"):
        tinyshakespeare_corpus(str(tmp_path), SPLIT)
    assert list(tmp_path.iterdir()) == []


def test_tinyshakespeare_network_failure(tmp_path, monkeypatch):
    def fail(url, timeout):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", fail)
    with pytest.raises(MemsigError, match="by hand"):
        tinyshakespeare_corpus(str(tmp_path), SPLIT)
    assert list(tmp_path.iterdir()) == []
