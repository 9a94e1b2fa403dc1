"""Bad input gets a clear error before any work, and nothing else: config values, text files,
numerical blow-ups. Random and malformed inputs never crash with anything but a MemsigError."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import pytest

from memsig.data.text import text_corpus
from memsig.errors import ConfigError, MemsigError, NumericalError
from memsig.pipeline import run
from memsig.validate import CHECKS

BAD_VALUES = [-1, 0, 1.5, "abc", None, True, -0.5, 10**9 * -1]
SPLIT = {"train": 0.7, "val": 0.1, "probe_train": 0.1, "probe_test": 0.1}


def _override(key: str, value) -> str:
    if value is None:
        return f"{key}=null"
    return f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"


# keys that only some data sources have: the source to check them with
SOURCE_OF = {"data.lag": "data=repeat", "data.p": "data=repeat", "data.delay": "data=copy"}


def _with_group(key: str, override: str) -> list[str]:
    """Keys that exist only with a probe kind (probe.mlp.*, probe.ridge.*) or a data source
    (data.lag, ...) are checked with that kind or source selected."""
    kind = key.split(".")[1] if key.startswith(("probe.mlp.", "probe.ridge.")) else None
    groups = [f"probe={kind}"] if kind else []
    return [*groups, *([SOURCE_OF[key]] if key in SOURCE_OF else []), override]


@pytest.mark.parametrize("key", list(CHECKS))
def test_every_checked_key_rejects_bad_values_before_work(tiny_config, key):
    test = CHECKS[key][0]
    for value in BAD_VALUES:
        if test(value):
            continue
        cfg = tiny_config(*_with_group(key, _override(key, value)), run=f"{key}-{value}")
        with pytest.raises(ConfigError) as caught:
            run(cfg)
        assert key in str(caught.value) and "e.g." in str(caught.value)
        assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_random_config_values_give_only_clear_errors(tiny_config):
    rng = np.random.default_rng(0)
    keys = [
        *CHECKS,
        "probe.max_offset",
        "probe.offsets",
        "data.order",
        "data.branching",
        "data.vocab_size",
        "data.num_chars",
        "model.hidden",
        "model.layers",
        "model.embed",
    ]
    for trial in range(12):
        key = keys[rng.integers(len(keys))]
        value = [-7, 0, "x", 2.5, None, "[1,b]"][rng.integers(6)]
        override = _override(key, value) if value != "[1,b]" else f"{key}=[1,b]"
        cfg = tiny_config(*_with_group(key, override), run=f"fuzz{trial}")
        start = time.monotonic()
        try:
            run(cfg)  # some values are fine (e.g. probe.offsets=null): they must then just work
        except MemsigError as err:
            assert str(err)
        assert time.monotonic() - start < 120


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"ab",
        b"\xff\xfe\x00\x01" * 50,
        bytes(range(256)) * 20,
        b"\x00" * 5000,
        "caf\u00e9 na\u00efve \U0001f600 ".encode() * 400,
    ],
)
def test_malformed_text_files_give_clear_errors(tmp_path, content):
    path = tmp_path / "input.txt"
    path.write_bytes(content)
    try:
        corpus = text_corpus(str(path), SPLIT)
    except MemsigError as err:
        assert str(path) in str(err) or "data." in str(err)
    else:  # valid UTF-8 of a usable length: every token is in range
        assert all(len(part) >= 2 for part in corpus.parts.values())
        assert max(int(p.max()) for p in corpus.parts.values()) < len(corpus.vocab)


def test_random_byte_files_never_crash(tmp_path):
    rng = np.random.default_rng(1)
    for trial in range(20):
        path = tmp_path / f"random{trial}.txt"
        path.write_bytes(
            rng.integers(0, 256, size=int(rng.integers(0, 4000))).astype(np.uint8).tobytes()
        )
        with contextlib.suppress(MemsigError):
            text_corpus(str(path), SPLIT)


def test_diverging_training_stops_with_the_step_and_the_fix(tiny_config):
    cfg = tiny_config(
        "model.optimizer._target_=torch.optim.SGD",
        "model.optimizer.lr=inf",
        "model.training.grad_clip=0",
        "model.training.max_epochs=2",
    )
    with pytest.raises(NumericalError) as caught:
        run(cfg)
    message = str(caught.value)
    assert "at step" in message and "model.optimizer.lr" in message and "grad_clip" in message
    assert not (Path(cfg.paths.output_dir) / "checkpoints" / "base.ckpt").exists()


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["probe=mlp", "probe.mlp.hidden=0"], ["probe.mlp.hidden=0", "integer >= 1"]),
        (
            ["probe=ridge", "probe.ridge.strengths=[0.1,-2.0]"],
            ["probe.ridge.strengths=[0.1, -2.0]", "each >= 0", "e.g. probe.ridge.strengths="],
        ),
        (["probe=ridge", "probe.ridge.strengths=[]"], ["probe.ridge.strengths=[]", "non-empty"]),
        (["probe.kind=svm"], ["probe.kind='svm'", "probe=ridge"]),
    ],
)
def test_bad_probe_kind_settings_fail_before_work(tiny_config, overrides, words):
    cfg = tiny_config(*overrides)
    with pytest.raises(ConfigError) as caught:
        run(cfg)
    for word in words:
        assert word in str(caught.value)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()
