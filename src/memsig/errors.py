"""Errors that carry a message for the user: what is wrong and how to fix it."""


class MemsigError(Exception):
    """A problem with the user's input (config, files, checkpoints), shown without a traceback."""


class ConfigError(MemsigError):
    """A config value that cannot work."""


class NumericalError(MemsigError):
    """A loss or a state that became NaN or infinite."""


BASE_MODEL_FIX = (
    "lower the learning rate (model.optimizer.lr) or clip gradients harder "
    "(model.training.grad_clip=1.0)"
)


def check_finite_loss(loss, step: int, what: str, fix: str) -> None:
    """Stop training as soon as `loss` (a tensor) is NaN or infinite, naming the step and the
    fix, instead of letting a broken model reach the signature."""
    if not bool(loss.isfinite().all()):
        raise NumericalError(f"{what} became {loss.item()} at step {step}: {fix}")
