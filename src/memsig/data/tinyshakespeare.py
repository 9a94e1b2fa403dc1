"""Tiny Shakespeare (Karpathy's char-rnn data set, ~1.1M characters), checked by sha256."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from memsig.data.corpus import Corpus
from memsig.data.text import text_corpus
from memsig.runtime.atomic import temp_file_beside
from memsig.runtime.errors import MemsigError

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
FILENAME = "tinyshakespeare.txt"


def _sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _download(url: str, path: Path, sha256: str) -> None:
    """Fetch url into a temporary file next to path and move it there only if its hash matches,
    so an interrupted or wrong download never leaves a file that looks valid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(path, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    shutil.copyfileobj(response, file)
            except (OSError, http.client.HTTPException) as error:
                raise MemsigError(
                    f"could not download {url} ({error}); place the file at {path} by hand "
                    f"(sha256 {sha256})"
                ) from None
        actual = _sha256(Path(tmp))
        if actual != sha256:
            raise MemsigError(
                f"downloaded {url} has sha256 {actual}, expected sha256 {sha256}; nothing was "
                f"saved. Check the URL, or place the correct file at {path} by hand"
            )
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def tinyshakespeare_corpus(
    root: str,
    split: Mapping[str, float],
    url: str = URL,
    sha256: str = SHA256,
    download: bool = True,
) -> Corpus:
    """Load <root>/tinyshakespeare.txt, downloading it first when absent and download is true."""
    path = Path(root) / FILENAME
    if path.exists():
        actual = _sha256(path)
        if actual != sha256:
            raise MemsigError(
                f"{path} is corrupt: sha256 {actual}, expected sha256 {sha256}; "
                "delete it to re-download"
            )
    elif download:
        _download(url, path, sha256)
    else:
        raise MemsigError(
            f"{path} does not exist and downloading is off; place the file there by hand "
            "or set data.download=true"
        )
    return text_corpus(str(path), split, name="tinyshakespeare")
