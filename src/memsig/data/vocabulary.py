"""A corpus read with another model's vocabulary: a model trained elsewhere (`model=external`,
`memsig.signature_of`) numbers its symbols its own way, and the probes' targets must be the
ids it reads."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from memsig.data.corpus import PARTS, Corpus
from memsig.runtime.errors import ConfigError


def recode(corpus: Corpus, vocab: Sequence[str], unknown: str | None = None) -> Corpus:
    """`corpus` with its tokens numbered by `vocab` (index = the model's input id). A symbol
    the corpus uses but `vocab` lacks is an error, or becomes `unknown` when that is given."""
    vocab = list(vocab)
    ids = {symbol: i for i, symbol in enumerate(vocab)}
    if unknown is not None and unknown not in ids:
        raise ConfigError(f"model.unknown={unknown!r} is not in the model's vocabulary")
    used = np.unique(np.concatenate([corpus.parts[part] for part in PARTS]))
    missing = [corpus.vocab[i] for i in used if corpus.vocab[i] not in ids]
    if missing and unknown is None:
        shown = ", ".join(repr(s) for s in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ConfigError(
            f"data={corpus.name} uses {len(missing)} symbols the model's vocabulary lacks "
            f"({shown}): probe it on data it can read, or map them to one of its symbols "
            "with model.unknown=SYMBOL"
        )
    fallback = ids.get(unknown, -1)
    table = np.array([ids.get(symbol, fallback) for symbol in corpus.vocab], dtype=np.int64)
    parts = {part: table[corpus.parts[part]] for part in PARTS}
    return dataclasses.replace(corpus, vocab=tuple(vocab), parts=parts)
