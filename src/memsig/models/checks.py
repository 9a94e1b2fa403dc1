"""Argument checks shared by the networks: sizes are integers above a floor, dropout a rate."""

from __future__ import annotations


def check_sizes(sizes: dict[str, tuple[object, int]], dropout: object = 0.0) -> None:
    """`sizes` maps a name to (value, smallest allowed); ValueError naming the first bad one."""
    for name, (value, low) in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}={value!r}: must be >= {low} (an integer)")
    if not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout!r}: must be in [0, 1)")
