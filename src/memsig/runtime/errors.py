"""Errors that carry a message for the user: what is wrong and how to fix it."""

import sys
from typing import NoReturn


class MemsigError(Exception):
    """A problem with the user's input (config, files, checkpoints), shown without a traceback."""


class ConfigError(MemsigError):
    """A config value that cannot work."""


class NumericalError(MemsigError):
    """A loss or a state that became NaN or infinite."""


def exit_with(err: MemsigError) -> NoReturn:
    """End the command with the error's one line on stderr and status 2, no traceback."""
    print(f"memsig: error: {err}", file=sys.stderr)
    raise SystemExit(2) from None


BASE_MODEL_FIX = (
    "lower the learning rate (model.optimizer.lr) or clip gradients harder "
    "(model.training.grad_clip=1.0)"
)


def check_finite_loss(loss, step: int, what: str, fix: str) -> None:
    """Stop training as soon as `loss` (a tensor) is NaN or infinite, naming the step and the
    fix, instead of letting a broken model reach the signature."""
    if not bool(loss.isfinite().all()):
        raise NumericalError(f"{what} became {loss.item()} at step {step}: {fix}")
