"""Shared fixtures: the real Hydra configs, composed and shrunk to CPU-sized runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from memsig.config.compose import CONFIG_DIR

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout: run.py, scripts/
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

# A small LM and probe that still learn an order-2 Markov source in seconds.
TINY = [
    "model.layers=1",
    "model.hidden=48",
    "model.embed=8",
    "model.training.batch_size=16",
    "model.training.bptt=32",
    "model.training.max_epochs=8",
    "model.optimizer.lr=0.01",
    "probe.max_offset=6",
    "probe.batch_size=512",
    "++probe.max_epochs=12",  # ++: set for the trained kinds, harmless for ridge
    "probe.extract.segments=4",
    "probe.extract.burn_in=64",
    "probe.extract.chunk=128",
    "trainer.enable_progress_bar=false",
    "logger=none",
]
# The default data (markov), shrunk: applied unless the test picks another dataset.
TINY_MARKOV = ["data.order=2", "data.vocab_size=6", "data.branching=4", "data.num_chars=40000"]
# a larger Markov stream whose probe parts hold most of it (conformance against scikit-learn)
CONFORMANCE_DATA = [
    "data.num_chars=160000",
    "data.split.train=0.25",
    "data.split.val=0.05",
    "data.split.probe_train=0.45",
    "data.split.probe_test=0.25",
]


# The speech experiment shrunk: a few seconds of synthetic audio, a small encoder, few epochs.
TINY_SPEECH = [
    "experiment=asr_layers",
    "model.layers=2",
    "model.hidden=32",
    "model.training.batch_size=8",
    "model.training.max_epochs=2",
    "model.optimizer.lr=0.01",
    "data.letters=abcd",
    "data.lexicon_size=6",
    "data.words=[2,3]",
    "data.utterances={train: 16, val: 4, probe_train: 10, probe_test: 4}",
    "data.speakers={train: 2, val: 1, probe_train: 1, probe_test: 1}",
    "probe.max_offset=2",
    "probe.batch_size=256",
    "++probe.max_epochs=2",  # ++: set for the trained kinds, harmless for ridge
    "trainer.enable_progress_bar=false",
    "logger=none",
]


def compose_config(
    output_dir: Path, overrides: list[str] = (), tiny: list[str] = TINY
) -> DictConfig:
    """The project's config with `tiny` sizes, writing into output_dir, plus overrides."""
    data = [] if any(o.startswith("data=") for o in [*tiny, *overrides]) else TINY_MARKOV
    data = data if tiny is TINY else []
    if {"model=ngram", "model=external"} & set(overrides):  # no network sizes, no training
        tiny = [o for o in tiny if not o.startswith("model.")]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[*tiny, *data, f"paths.output_dir={output_dir}", *overrides],
        )


@pytest.fixture
def tiny_config(tmp_path):
    """Build a tiny config: tiny_config(overrides..., run="name")."""

    def build(*overrides: str, run: str = "run") -> DictConfig:
        return compose_config(tmp_path / run, list(overrides))

    return build


@pytest.fixture(scope="session")
def shakespeare_dir() -> Path:
    assert (SHARED_DATA / "tinyshakespeare.txt").is_file(), f"missing {SHARED_DATA}"
    return SHARED_DATA


def wandb_records(wandb_dir: Path) -> list[dict]:
    """Every record of the one offline W&B run under wandb_dir, as wandb's own transaction-log
    inspector (`wandb leet inspect --json`) prints them."""
    (offline,) = Path(wandb_dir).glob("offline-run-*")
    printed = subprocess.run(
        [str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--json", str(offline)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return [json.loads(line) for line in printed.splitlines() if line.strip()]


def offline_env(home: Path) -> dict:
    """No W&B credentials: no API key, a HOME without ~/.netrc."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    env.update(HOME=str(home), WANDB_DATA_DIR=str(home / "wandb-data"))
    return env


def strict_json_errors(root: Path) -> list[str]:
    """Every JSON file under `root` that a strict parser rejects, with the reason: a NaN,
    Infinity or -Infinity token (which Python's json module writes and reads by default)."""

    def refuse(token: str) -> None:
        raise ValueError(f"non-standard token {token}")

    errors = []
    for path in sorted(Path(root).rglob("*.json")):
        try:
            json.loads(path.read_text(), parse_constant=refuse)
        except (ValueError, UnicodeDecodeError) as err:
            errors.append(f"{path}: {err}")
    return errors


@pytest.fixture(scope="session", autouse=True)
def every_json_file_is_strict(tmp_path_factory):
    """After the last test: no JSON file written by any test run (in pytest's temporary
    directories, subprocess runs included) holds a NaN or Infinity token."""
    yield
    errors = strict_json_errors(tmp_path_factory.getbasetemp())
    assert not errors, "JSON files strict parsers reject:\n" + "\n".join(errors)


def run_command(
    args: list[str], env: dict | None = None, timeout: int = 600, cwd: Path | None = None
):
    """`python run.py ARGS` in a fresh process (started in `cwd`), the way a user runs it."""
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


@pytest.fixture(scope="session")
def tiny_lstm_run(tmp_path_factory) -> Path:
    """A tiny default-like run (LSTM on the order-2 Markov source: views layer1.h, layer1.c,
    logits; the probes' default epoch budget), shared by the tests that audit a finished run."""
    from memsig.pipeline.run import run

    run_dir = tmp_path_factory.mktemp("lstm") / "run"
    run(compose_config(run_dir, ["probe.max_epochs=30", *CONFORMANCE_DATA]))
    return run_dir


# fixtures that run the pipeline end to end (a trained model and its signature): every test
# that uses one is `slow`, left out of `make test-fast`
PIPELINE_FIXTURES = {
    "base_stage_done",
    "fdr_run",
    "kinds_runs",
    "local_sweep",
    "markov_run",
    "ngram_runs",
    "redirected_run",
    "reference_run",
    "runs",
    "text_checkpoint",
    "tiny_lstm_run",
    "tracked_run",
    "trained",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PIPELINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
