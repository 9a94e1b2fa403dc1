"""The run dir must be writable, and is checked before anything is written there.

Hydra opens its log file in the run dir before the run starts; in a directory that cannot be
written its logging setup fails with a traceback (`Unable to configure handler 'file'`).
:class:`WritableRunDir`, a Hydra callback (conf/hydra/default.yaml), checks the run or sweep
dir first and ends the command with one line instead; :func:`check_writable` serves runs
started from Python as well."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from memsig.runtime.errors import ConfigError, exit_with


def check_writable(directory: Path, key: str) -> None:
    """Create `directory` if needed and a file in it, or raise ConfigError naming `key`."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise ConfigError(
            f"{key}={directory} cannot be written ({err.strerror or err}): choose a writable "
            f"directory (e.g. {key}=$HOME/memsig-runs/NAME) or fix its permissions"
        ) from None


class WritableRunDir(Callback):
    """Checks the run dir (or a sweep's dir) before Hydra configures logging there."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")

    @staticmethod
    def _check(directory: str, key: str) -> None:
        try:
            check_writable(Path(directory), key)
        except ConfigError as err:
            exit_with(err)
