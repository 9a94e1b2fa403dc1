"""Write files under a temporary name and rename, so a crash never leaves a truncated file;
JSON strictly (no NaN or Infinity tokens, which strict parsers reject)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path


def current_umask() -> int:
    """The process's umask (read from /proc where possible: setting it to read it is racy)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_file_beside(path: Path, suffix: str = "") -> tuple[int, str]:
    """An open temporary file next to `path` (fd, name) with the permissions a plain `open`
    would give it (0666 less the umask), not mkstemp's owner-only 0600: renamed into place, it
    is readable by the group on a shared file system exactly when the user's umask says so."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())
    return fd, tmp


@contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGTERM and SIGINT wait until the block ends. torch.save writes through Python
    callbacks from native code; a stop signal handled inside one has crashed the process
    (heap corruption, exit 134) instead of stopping it. Deferred, the signal is raised again
    right after the write, its file complete, and stops the run as it would have."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread handles signals
        return
    pending: list[int] = []
    stops = [s for s in (signal.SIGTERM, signal.SIGINT) if signal.getsignal(s) is not None]
    previous = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in stops}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`; stop
    signals wait until both are done."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(path)
    os.close(fd)
    try:
        with signals_deferred():
            write(Path(tmp))
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


UNDEFINED = "undefined"  # the key that lists the values written as null, with the reason


def strict_json(data: object) -> object:
    """`data` with every NaN or infinite float replaced by None (JSON null). When any is, a
    mapping at the top gains an `undefined` entry: {path of each null: why}, e.g.
    {"views.layer1.h.xent_bits[3]": "NaN: ..."}, so a reader learns why a number is missing."""
    reasons: dict[str, str] = {}
    clean = _finite(data, "", reasons)
    if reasons and isinstance(clean, dict):
        clean[UNDEFINED] = {**clean.get(UNDEFINED, {}), **reasons}
    return clean


def _finite(value: object, path: str, reasons: dict[str, str]) -> object:
    if isinstance(value, Mapping):
        return {k: _finite(v, f"{path}.{k}" if path else str(k), reasons) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v, f"{path}[{i}]", reasons) for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        reasons[path] = (
            "NaN: not a number (a mean over no positions, or 0/0)"
            if math.isnan(value)
            else f"{value}: unbounded (never reached within the offsets, or a zero probability)"
        )
        return None
    return value


def json_text(data: object, indent: int | None = 2) -> str:
    """Strict JSON text of `data` (see `strict_json`): the one encoding of every JSON memsig
    writes."""
    return json.dumps(strict_json(data), indent=indent, allow_nan=False) + "\n"


def write_json_atomic(path: Path, data: object) -> None:
    write_text_atomic(path, json_text(data))


def write_csv_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """A CSV file with a header row, written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
