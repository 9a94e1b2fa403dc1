"""The config a run starts with, printed short: one line per section, `key=value` pairs, nodes
built from a `_target_` shown as `Name(...)`. The whole resolved config is in the run dir's
config.yaml; this is what a person reads at the top of a log to know what ran."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

WIDTH = 100  # characters per printed line
HIDDEN = ("_target_", "_partial_")


def _pairs(mapping: Mapping) -> str:
    return ", ".join(f"{k}={_text(v)}" for k, v in mapping.items() if k not in HIDDEN)


def _text(value: object) -> str:
    if isinstance(value, Mapping):
        target = value.get("_target_")
        return f"{str(target).rsplit('.', 1)[-1] if target else ''}({_pairs(value)})"
    if isinstance(value, list):
        return "[" + ", ".join(map(_text, value)) + "]"
    return str(value)


def _line(label: str, text: str) -> str:
    return textwrap.fill(
        text,
        WIDTH,
        initial_indent=f"  {label}: ",
        subsequent_indent="      ",
        break_on_hyphens=False,
    )


def config_tree(config: Mapping, choices: Mapping[str, str], full: str) -> str:
    """`config` (resolved, plain containers) as a few lines: the group choices, the top-level
    settings, then each section; `full` says where the whole config is."""
    lines = [f"config (in full: {full})"]
    if choices:
        lines.append(_line("choices", " ".join(f"{g}={c}" for g, c in choices.items())))
    top = {k: v for k, v in config.items() if not isinstance(v, Mapping)}
    lines.append(_line("run", _pairs(top)))
    for section, value in config.items():
        if isinstance(value, Mapping):
            lines.append(_line(section, _text(value) if "_target_" in value else _pairs(value)))
    return "\n".join(lines)
