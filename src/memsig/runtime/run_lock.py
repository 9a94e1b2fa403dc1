"""One run per run dir at a time: an exclusive lock on `<run dir>/.memsig.lock`, held for the
life of the run and released by the system when the process ends, however it ends."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from memsig.runtime.errors import MemsigError

LOCK = ".memsig.lock"


@contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run dir's lock, or refuse at once naming the process that holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask, like every file
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise MemsigError(
                f"{run_dir} is in use by {holder}: wait for that run to end, or use another "
                "run dir (hydra.run.dir=...)"
            ) from None
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        holder = f"pid {os.getpid()} on host {socket.gethostname()} since {started}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
