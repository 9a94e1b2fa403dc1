"""Errors that carry a message for the user: what is wrong and how to fix it."""


class MemsigError(Exception):
    """A problem with the user's input (config, files, checkpoints), shown without a traceback."""


class ConfigError(MemsigError):
    """A config value that cannot work."""


class NumericalError(MemsigError):
    """A loss or a state that became NaN or infinite."""
