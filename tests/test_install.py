"""memsig installed from its wheel, away from the checkout: the wheel holds the config tree (and
not a machine's local/ configs), and the installed `memsig` runs a tiny experiment, given as the
user's own config group, from a folder of its own, writing there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT_ROOT, TINY, TINY_MARKOV

# what a wheel is built from (the checkout's package sources and configs)
SOURCES = ("pyproject.toml", "README.md", "src", "conf")


def user_experiment(overrides: list[str]) -> str:
    """`key=value` overrides as the experiment file a user writes in their own config folder."""
    tree: dict = {}
    for override in overrides:
        key, value = override.split("=", 1)
        *parents, leaf = key.split(".")
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = yaml.safe_load(value)
    return "# @package _global_\n" + yaml.safe_dump(tree)


def pip(*args: str, cwd: Path) -> None:
    """pip of the test environment, offline: nothing may be downloaded."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--no-index", "--no-deps", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the checkout that also holds a machine's local config."""
    copy = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        source = PROJECT_ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "local")
            shutil.copytree(source, copy / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(source, copy / name)
    (copy / "conf" / "local").mkdir()
    (copy / "conf" / "local" / "default.yaml").write_text("paths:\n  data_dir: /mine\n")
    dist = tmp_path_factory.mktemp("dist")
    pip("wheel", "--no-build-isolation", "--wheel-dir", str(dist), str(copy), cwd=copy)
    (built,) = dist.glob("memsig-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_holds_the_config_tree_and_no_local_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {
        f"memsig/conf/{p.relative_to(PROJECT_ROOT / 'conf')}"
        for p in (PROJECT_ROOT / "conf").rglob("*.yaml")
        if "local" not in p.relative_to(PROJECT_ROOT / "conf").parts
    }
    assert len(configs) > 30 and "memsig/conf/config.yaml" in configs
    assert configs <= names
    assert "memsig/conf/__init__.py" in names  # Hydra's pkg://memsig.conf needs a module
    assert not any(n.startswith("memsig/conf/local/") for n in names)
    assert "memsig/cli.py" in names and "hydra_plugins/memsig_launcher/__init__.py" in names


@pytest.mark.slow
def test_installed_memsig_runs_from_any_folder_and_writes_there(wheel, tmp_path):
    target, cwd = tmp_path / "site", tmp_path / "work"
    pip("install", "--target", str(target), str(wheel), cwd=tmp_path)
    (cwd / "my_conf" / "experiment").mkdir(parents=True)
    (cwd / "my_conf" / "experiment" / "tiny.yaml").write_text(
        user_experiment([o for o in [*TINY, *TINY_MARKOV] if "." in o.split("=")[0]])
    )
    # the installed package first on the path, ahead of the checkout's editable install
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "disabled"}
    where = subprocess.run(
        [sys.executable, "-c", "import memsig.cli; print(memsig.cli.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
    )
    assert Path(where.stdout.strip()) == target / "memsig" / "cli.py"
    command = [str(target / "bin" / "memsig")]
    shown = subprocess.run([*command, "--help"], capture_output=True, text=True, env=env, cwd=cwd)
    assert shown.returncode == 0 and "selfcheck" in shown.stdout and "debug: " in shown.stdout
    done = subprocess.run(
        [
            *command,
            "hydra.searchpath=[file://my_conf]",
            "experiment=tiny",
            "logger=none",
            "threads=1",
            "data.num_chars=20000",
            "model.training.max_epochs=2",
            "probe.max_epochs=2",
            "probe.max_offset=2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (cwd / "outputs" / "runs").iterdir()
    assert (run_dir / "signature.json").is_file()
    assert (run_dir / "checkpoints" / "base.ckpt").is_file()
    assert "hidden: 48" in (run_dir / "config.yaml").read_text()  # the user's experiment
    assert not (target / "outputs").exists()  # nothing written next to the installed package
