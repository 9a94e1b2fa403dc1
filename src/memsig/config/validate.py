"""Config values checked before any work starts, each with the fix in its message."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from memsig.config.compose import CONFIG_DIR
from memsig.runtime.errors import ConfigError


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _non_negative_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _non_negative_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _positive_number(value) -> bool:
    return _non_negative_number(value) and value > 0


def _fraction(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1


def _non_negative_numbers(value) -> bool:
    return (
        isinstance(value, list | ListConfig)
        and len(value) > 0
        and all(map(_non_negative_number, value))
    )


PROBE_KINDS = ("linear", "mlp", "ridge")


def _probability(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


def _optional_non_negative_int(value) -> bool:
    return value is None or _non_negative_int(value)


# key -> (test, what it must be, an example); keys absent from a config are skipped.
CHECKS: dict[str, tuple[Callable[[object], bool], str, str]] = {
    "seed": (_non_negative_int, "an integer >= 0", "seed=0"),
    "threads": (lambda v: v is None or _positive_int(v), "null or an integer >= 1", "threads=1"),
    "max_vocab": (_positive_int, "an integer >= 1", "max_vocab=1000"),
    "progress_every": (_non_negative_number, "a number of seconds >= 0", "progress_every=30"),
    "data.lag": (_positive_int, "an integer >= 1 (the input that repeats)", "3"),
    "data.delay": (_positive_int, "an integer >= 1 (the input the model emits)", "3"),
    "data.p": (_probability, "a probability in [0, 1]", "0.3"),
    "model.training.batch_size": (_positive_int, "an integer >= 1", "32"),
    "model.training.bptt": (_positive_int, "an integer >= 1", "64"),
    "model.training.max_epochs": (_positive_int, "an integer >= 1", "40"),
    "model.training.patience": (_non_negative_int, "an integer >= 0", "2"),
    "model.training.grad_clip": (_non_negative_number, "a number >= 0 (0 disables)", "1.0"),
    "model.optimizer.lr": (_positive_number, "a number > 0", "0.003"),
    "probe.kind": (lambda v: v in PROBE_KINDS, "linear, mlp or ridge", "probe=ridge"),
    "probe.mlp.hidden": (_positive_int, "an integer >= 1 (hidden units per MLP)", "128"),
    "probe.ridge.strengths": (
        _non_negative_numbers,
        "a non-empty list of ridge strengths, each >= 0",
        "[1.0e-3,1.0e-2,1.0e-1]",
    ),
    "probe.batch_size": (_positive_int, "an integer >= 1", "1024"),
    "probe.max_epochs": (_positive_int, "an integer >= 1", "30"),
    "probe.patience": (_non_negative_int, "an integer >= 0", "2"),
    "probe.val_fraction": (_fraction, "a fraction in (0, 1)", "0.1"),
    "probe.optimizer.lr": (_positive_number, "a number > 0", "0.01"),
    "probe.bootstrap.resamples": (_non_negative_int, "an integer >= 0 (0: no intervals)", "1000"),
    "probe.bootstrap.block_chars": (_positive_int, "an integer >= 1", "500"),
    "probe.bootstrap.level": (_fraction, "a fraction in (0, 1)", "0.95"),
    "probe.during_training.every_n_steps": (_non_negative_int, "an integer >= 0", "50"),
    "probe.during_training.chars": (_positive_int, "an integer >= 1", "4000"),
    "probe.condition_on": (
        _optional_non_negative_int,
        "null (off) or an integer >= 0 (inputs in view)",
        "probe.condition_on=1",
    ),
    "probe.extract.segments": (_positive_int, "an integer >= 1", "32"),
    "probe.extract.chunk": (_positive_int, "an integer >= 1", "256"),
    "probe.extract.burn_in": (_non_negative_int, "an integer >= 0", "256"),
    "probe.extract.dtype": (lambda v: v in ("float32", "float16"), "float32 or float16", "float16"),
}


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value cannot work."""
    for key, (test, must_be, example) in CHECKS.items():
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is _MISSING:
            continue
        if not test(value):
            shown = example if "=" in example else f"{key}={example}"
            raise ConfigError(f"{key}={value!r}: must be {must_be} (e.g. {shown})")


_MISSING = object()


def _target_parameters(node: object, path: str) -> set[str] | None:
    """The keyword arguments the node is built with: its `_target_`'s parameters (the
    `trainer` group's keys are Lightning Trainer arguments); None when it takes any keyword."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if path == "trainer":
        target = "lightning.Trainer"
    if target is None:
        return set()
    from hydra.utils import get_object

    parameters = inspect.signature(get_object(target)).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}


def _is_group_choice(key: str, package: str | None) -> bool:
    """`+experiment=NAME`, `+hydra/...`: a config group choice, not a key."""
    return package is not None or "/" in key or (CONFIG_DIR / key.replace(".", "/")).is_dir()


def added_keys(overrides: Sequence[str]) -> list[tuple[str, str]]:
    """(key, override) of every `+key=value` override that adds a key (group choices and
    Hydra's own settings left out). `++key=value` sets a key whether or not the config has it
    (a sweep's setting shared by models with different keys), so it is not checked."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [
        (o.key_or_group, text)
        for o, text in zip(parsed, overrides, strict=True)
        if o.is_add()
        and not o.key_or_group.startswith("hydra.")
        and not _is_group_choice(o.key_or_group, o.package)
    ]


def check_added_keys(overrides: Sequence[str], reference: DictConfig) -> None:
    """Refuse a key added with `+` that nothing reads (a typo such as `+model.hiden=64`,
    which would otherwise be ignored): it must be in `reference` (the config composed without
    the added keys) or be an argument of the `_target_` that builds the node it lands in."""
    for key, override in added_keys(overrides):
        parts = key.split(".")
        for depth in range(len(parts)):
            parent = ".".join(parts[:depth])
            node = OmegaConf.select(reference, parent) if parent else reference
            if not isinstance(node, DictConfig):
                break  # inside a value the reference does not have: reported one level up
            accepted = _target_parameters(node, parent)
            name = parts[depth]
            if name in node or accepted is None or name in accepted:
                continue
            known = sorted({*node.keys(), *(accepted or ())} - {"_target_", "_partial_"})
            where = parent or "the config"
            close = difflib.get_close_matches(name, known, n=1)
            suggestion = f" Did you mean {'.'.join([*parts[:depth], close[0]])}?" if close else ""
            raise ConfigError(
                f"{override}: {where} has no key {name!r}, so nothing would read it.{suggestion} "
                f"Keys of {where}: {', '.join(known)} (to change an existing key, drop the +)"
            )


def check_command_line_keys() -> None:
    """In a run started from the command line, :func:`check_added_keys` on its overrides."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or not GlobalHydra.instance().is_initialized():
        return
    hydra = HydraConfig.get()
    overrides = list(hydra.overrides.task)
    # `+group=option` of a group only a search path holds (hydra.searchpath): Hydra resolved
    # it as a group choice, so it is no key
    groups = {o for key, o in added_keys(overrides) if key in hydra.runtime.choices}
    added = {o for _, o in added_keys(overrides)} - groups
    if added:
        kept = [o for o in overrides if o not in added]
        checked = [o for o in overrides if o not in groups]
        check_added_keys(checked, compose(hydra.job.config_name, kept))
