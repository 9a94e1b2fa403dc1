"""What a stage's outputs were made from (its resolved config, the data's fingerprint, the
checkpoint's digest), and how two such records differ, in words a rerun can print."""

from __future__ import annotations

import json
from collections.abc import Mapping


def differences(recorded: Mapping | None, current: Mapping) -> list[str]:
    """`key: old -> new` for every leaf that differs (dotted keys); ["no record"] when
    nothing was recorded. Values compare as JSON, so tuples equal lists."""
    if recorded is None:
        return ["no record of what they were made from"]
    old, new = _leaves(json.loads(json.dumps(recorded))), _leaves(json.loads(json.dumps(current)))
    return [
        f"{key}: {_short(old.get(key))} -> {_short(new.get(key))}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def _leaves(value, prefix: str = "") -> dict:
    if isinstance(value, dict) and value:
        out = {}
        for key, item in value.items():
            out.update(_leaves(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _short(value) -> str:
    """Digests are long: their first 12 characters name them well enough."""
    if value is None:
        return "(none)"
    if isinstance(value, str) and len(value) == 64:
        return value[:12]
    return json.dumps(value)
