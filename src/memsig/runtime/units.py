"""Scores are reported in bits; losses come in nats."""

from __future__ import annotations

import math

LN2 = math.log(2.0)


def nats_to_bits(nats):
    """Nats (a number or a tensor) in bits."""
    return nats / LN2
