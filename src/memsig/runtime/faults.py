"""Deterministic fault injection for the resume tests, inert unless MEMSIG_FAULT is set.

`MEMSIG_FAULT=<point>@<n>:<TERM|KILL>` makes the process send itself SIGTERM or SIGKILL the
n-th time it reaches the named point (n = 1 when `@<n>` is left out). The points sit where a
real job is most often stopped: `base_epoch` (after an epoch's resume checkpoint),
`base_fitted` (training over, before base.ckpt), `extract` (after a block of cached states),
`probe_epoch`, `probe_fitted` (training over, before testing) and `signature_file` (after each
output file of the signature stage)."""

from __future__ import annotations

import os
import signal
from collections import Counter

_reached: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """Signal this process if MEMSIG_FAULT names this point and this is the n-th time here."""
    spec = os.environ.get("MEMSIG_FAULT")
    if not spec:
        return
    where, _, sig = spec.rpartition(":")
    point, _, count = where.partition("@")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == int(count or 1):
        os.kill(os.getpid(), getattr(signal, f"SIG{sig}"))
