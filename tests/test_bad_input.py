"""Bad input gets a clear error before any work, and nothing else: config values, text files,
numerical blow-ups. Random and malformed inputs never crash with anything but a MemsigError."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import compose_config, run_command
from memsig.config.validate import CHECKS, check_added_keys
from memsig.data.text import text_corpus
from memsig.pipeline.budget import probe_parameters
from memsig.pipeline.run import run
from memsig.probes.multi_offset import MultiOffsetProbe
from memsig.reports.tracking import unreachable, wandb_logger
from memsig.runtime.errors import ConfigError, MemsigError, NumericalError

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.parametrize(
    "override, words",
    [
        ("probe.offsets=abc", ["probe.offsets='abc'", "list of integers", "probe.offsets=[0,1"]),
        ("probe.offsets=3", ["probe.offsets=3", "list of integers"]),
        ("probe.views=[]", ["probe.views=[]", "non-empty list", "probe.views=null"]),
        ("probe.views=layer1.h", ["probe.views='layer1.h'", "probe.views=[layer1.h]"]),
    ],
)
def test_offsets_and_views_of_the_wrong_shape_fail_before_work(tiny_config, override, words):
    cfg = tiny_config(override)
    with pytest.raises(ConfigError) as caught:
        run(cfg)
    for word in words:
        assert word in str(caught.value)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_an_added_key_that_nothing_reads_names_the_closest_key(tmp_path):
    reference = compose_config(tmp_path)
    with pytest.raises(ConfigError) as caught:
        check_added_keys(["threads=1", "+model.hiden=64"], reference)
    message = str(caught.value)
    assert message.startswith("+model.hiden=64: model has no key 'hiden'")
    assert "Did you mean model.hidden?" in message and "drop the +" in message
    with pytest.raises(ConfigError, match="Did you mean seed"):
        check_added_keys(["+sead=1"], reference)
    with pytest.raises(ConfigError, match="model.net has no key 'bidirectional'"):
        check_added_keys(["+model.net.bidirectional=true"], reference)
    # keys that exist, arguments of the node's _target_ (or of Lightning's Trainer), groups
    check_added_keys(
        [
            "++model.hidden=16",
            "+model.optimizer.betas=[0.9,0.99]",
            "+trainer.profiler=simple",
            "++data.name=x",
            "+experiment=asr_layers",
            "+hydra.job.env_set.X=1",
            "++model.bases=4",  # `++` sets a key whether or not this model has it
        ],
        reference,
    )


@pytest.mark.slow
def test_an_added_key_typo_is_refused_on_the_command_line(tmp_path):
    done = run_command(["+model.hiden=64", "logger=none", f"hydra.run.dir={tmp_path}"])
    assert done.returncode == 2
    assert "memsig: error: +model.hiden=64" in done.stderr and "model.hidden" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_a_vocabulary_beyond_the_limit_is_refused_with_an_estimate(tiny_config, tmp_path):
    path = tmp_path / "many_symbols.txt"
    rng = np.random.default_rng(0)
    symbols = [chr(0x4E00 + i) for i in range(5000)]
    path.write_text("".join(symbols) * 4 + "".join(rng.choice(symbols, 20000)), encoding="utf-8")
    cfg = tiny_config("data=text", f"data.path={path}")
    start = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        run(cfg)
    assert time.monotonic() - start < 60
    message = str(caught.value)
    classes = int(re.search(r"has (\d+) symbols", message).group(1))
    assert classes >= 5000
    assert "more than max_vocab=1000" in message and f"(max_vocab={classes})" in message
    assert re.search(r"about [\d.]+ GiB of memory", message)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_the_probe_size_estimate_counts_the_real_heads():
    view_dims, offsets, classes, strengths = {"layer1.h": 7, "logits": 11}, 3, 11, [0.1, 1.0]
    probe = MultiOffsetProbe(
        view_dims,
        offsets,
        classes,
        torch.optim.Adam,
        {v: np.zeros(d) for v, d in view_dims.items()},
        {v: np.eye(d) for v, d in view_dims.items()},
        strengths=strengths,
    )
    counted = sum(p.numel() for p in probe.parameters())
    assert probe_parameters(view_dims, offsets * len(strengths), classes) == counted


def test_an_unreachable_wandb_server_never_waits(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)  # a key, but no server to take it
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    start = time.monotonic()
    with caplog.at_level("WARNING", logger="memsig.reports.tracking"):
        logger = wandb_logger("memsig", str(tmp_path))  # online only implied by the key
    assert logger._offline and "logs offline" in caplog.text and "wandb sync" in caplog.text
    with pytest.raises(ConfigError) as caught:
        wandb_logger("memsig", str(tmp_path), offline=False)  # online asked for
    assert "cannot be reached" in str(caught.value) and "logger.wandb.offline=true" in str(
        caught.value
    )
    assert time.monotonic() - start < 10


def test_a_server_that_never_answers_is_given_up_on_in_time(monkeypatch):
    released = threading.Event()

    def never_answers(*args, **kwargs):
        released.wait()
        raise OSError("released by the test")

    monkeypatch.setattr(socket, "create_connection", never_answers)
    start = time.monotonic()
    try:
        assert unreachable("https://api.wandb.ai", timeout=0.5) == "no answer within 0.5 s"
        assert time.monotonic() - start < 2
    finally:
        released.set()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.undo()
        assert unreachable(f"http://127.0.0.1:{server.getsockname()[1]}", timeout=5) is None


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # free once closed: connecting is refused


@pytest.fixture
def unwritable_dir(tmp_path) -> Path:
    """A directory this process cannot create files in (root ignores permission bits: for
    root, a path on sysfs, where nothing can be created)."""
    if os.geteuid() == 0:
        return Path("/sys/memsig-run")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    return locked / "run"


def test_a_run_dir_that_cannot_be_written_is_one_line(unwritable_dir):
    done = run_command(["logger=none", f"hydra.run.dir={unwritable_dir}"])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"memsig: error: hydra.run.dir={unwritable_dir} cannot be written "
        f"({os.strerror(_errno_of(unwritable_dir))}): choose a writable directory "
        "(e.g. hydra.run.dir=$HOME/memsig-runs/NAME) or fix its permissions"
    ]


def _errno_of(directory: Path) -> int:
    try:
        directory.mkdir(parents=True)
    except OSError as err:
        return err.errno
    raise AssertionError(f"{directory} could be created")


def test_a_run_dir_that_cannot_be_written_is_refused_from_python(tiny_config, unwritable_dir):
    cfg = tiny_config(f"paths.output_dir={unwritable_dir}")
    with pytest.raises(ConfigError, match="paths.output_dir=.* cannot be written"):
        run(cfg)


def test_too_little_disk_for_the_checkpoints_is_refused_before_training(tiny_config, monkeypatch):
    cfg = tiny_config()
    free = 2 * 2**20  # 2 MiB: less than the base model's and the probe's checkpoints
    usage = shutil.disk_usage(Path(cfg.paths.output_dir).parent)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=free))
    with pytest.raises(MemsigError) as caught:
        run(cfg)
    message = str(caught.value)
    assert re.search(r"this run \(checkpoints [\d.]+ GiB, state cache [\d.]+ GiB\)", message)
    assert "0.00 GiB is free" in message and "hydra.run.dir=PATH" in message
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()
