"""memsig: memory signatures of recurrent models."""

__version__ = "0.1.0"
