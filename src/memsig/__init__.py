"""memsig: memory signatures of recurrent models.

`memsig.signature_of(model, tokens, vocab=...)` computes a model object's signature from
Python and returns a `memsig.Signature` (both from memsig.api, imported on first use so that
`import memsig` stays light)."""

__version__ = "0.1.0"
__all__ = ["Signature", "signature_of"]


def __getattr__(name: str):
    if name in __all__:
        from memsig import api

        return getattr(api, name)
    raise AttributeError(f"module 'memsig' has no attribute {name!r}")
