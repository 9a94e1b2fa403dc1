"""The `memsig` command and run.py: compose the Hydra config and run the pipeline, or run a
named command given as the first argument (COMMANDS; `memsig --help` lists them with the config
groups)."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from itertools import takewhile
from typing import NoReturn

import hydra
from omegaconf import DictConfig, OmegaConf

from memsig.config.compose import CONFIG_MODULE, in_sweep
from memsig.runtime.errors import MemsigError, exit_with

log = logging.getLogger("memsig")
# first argument -> (module whose command(argv) runs, what it does: shown by `memsig --help`)
COMMANDS = {
    "compare": (
        "memsig.commands.compare",
        "RUN_A RUN_B: which characters two runs' states keep, side by side",
    ),
    "compare-sweep": (
        "memsig.commands.compare_sweep",
        "MULTIRUN_DIR (also `compare MULTIRUN_DIR`): a sweep, mean and interval over seeds",
    ),
    "selfcheck": (
        "memsig.commands.selfcheck",
        "known-answer experiments: can signatures be trusted on this machine?",
    ),
    "audit": (
        "memsig.commands.audit",
        "RUN_DIR: a finished run's signature against scikit-learn's probes",
    ),
}


def commands_help() -> str:
    """The commands, one a line, for `memsig --help` (its template: conf/hydra/default.yaml)."""
    width = max(map(len, COMMANDS))
    return "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())


if not OmegaConf.has_resolver("memsig_commands"):
    OmegaConf.register_new_resolver("memsig_commands", commands_help)


def main() -> float | None:
    """`memsig NAME ARGS` runs a named command; anything else is a Hydra run."""
    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
        name, args = sys.argv[1], sys.argv[2:]
        if name == "compare" and len(list(takewhile(lambda a: not a.startswith("-"), args))) == 1:
            name = "compare-sweep"  # `memsig compare MULTIRUN_DIR [options]`: one folder
        try:
            return importlib.import_module(COMMANDS[name][0]).command(args)
        except MemsigError as err:
            _fail(err)
    return hydra_run()


def _fail(err: MemsigError) -> NoReturn:
    log.error("%s", err)
    exit_with(err)


def _stop_on_sigterm(signum: int, frame: object) -> NoReturn:
    """Stop wherever the run is (Lightning calls this after its own handler inside training);
    finished work is on disk and a rerun in the same run dir continues from it."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    raise SIGTERMException


@hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name="config", version_base="1.3")
def hydra_run(cfg: DictConfig) -> float | None:
    """Run the stages; returns the configured objective (the value a sweeper optimises).
    Lightning and the pipeline are imported here, so `memsig --help` answers at once."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from memsig.pipeline.run import run
    from memsig.signature.objective import objective

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        signature = run(cfg)
    except MemsigError as err:
        if not in_sweep():
            _fail(err)
        # a failed job of a sweep: say why, and let the launcher go on with the other jobs
        log.error("%s", err)
        print(f"memsig: error in job {cfg.paths.output_dir}: {err}", file=sys.stderr)
        raise
    except SIGTERMException:
        print(
            f"memsig: interrupted (SIGTERM); run the same command with "
            f"hydra.run.dir={cfg.paths.output_dir} to continue where it stopped",
            file=sys.stderr,
        )
        # every file is complete or removed by now (the stages' `finally` blocks have run);
        # the interpreter's teardown after a signal has crashed in native code (exit 134/139
        # instead of 143), so the process ends here, its logs flushed
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(143)
    if signature is None:
        return None
    return objective(signature, cfg.objective.metric, cfg.objective.view)
