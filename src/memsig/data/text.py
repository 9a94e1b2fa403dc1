"""Character-level corpus from any UTF-8 text file.

The vocabulary comes from the train block only, so val and probe blocks are scored the way
unseen text would be: characters the model never trained on become "<unk>" (index 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from memsig.data.corpus import Corpus, split_blocks
from memsig.runtime.errors import MemsigError

UNK = "<unk>"


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def _lookup(points: np.ndarray, vocab: Sequence[str]) -> np.ndarray:
    known = np.array([ord(symbol) for symbol in vocab[1:]], dtype=np.uint32)
    if len(known) == 0:
        return np.zeros(len(points), dtype=np.int64)
    pos = np.searchsorted(known, points).clip(max=len(known) - 1)
    return np.where(known[pos] == points, pos + 1, 0).astype(np.int64)


def encode(text: str, vocab: Sequence[str]) -> np.ndarray:
    """Token ids of text under vocab as text_corpus builds it ("<unk>", then sorted characters);
    characters outside vocab map to 0."""
    return _lookup(_code_points(text), vocab)


def _read(path: str, encoding: str) -> str:
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise MemsigError(
            f"data.path={path}: cannot read it ({error.strerror}); "
            "set data.path=FILE to an existing UTF-8 text file"
        ) from None
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as error:
        raise MemsigError(
            f"data.path={path}: not valid {encoding} at byte offset {error.start} "
            f"({error.reason}); convert the file to {encoding} or set data.encoding"
        ) from None


def text_corpus(
    path: str, split: Mapping[str, float], name: str = "text", encoding: str = "utf-8"
) -> Corpus:
    """Read path, cut its characters into blocks, and encode them with the train vocabulary."""
    text = _read(path, encoding)
    blocks = split_blocks(_code_points(text), split, source=f"data.path={path}")
    vocab = (UNK, *(chr(point) for point in np.unique(blocks["train"])))
    parts = {part: _lookup(points, vocab) for part, points in blocks.items()}
    return Corpus(name, "char", vocab, parts, {"num_chars": float(len(text))})
