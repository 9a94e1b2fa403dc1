"""The base checkpoint: plain containers and tensors only, so it loads with weights_only=True."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch
from torch import nn

from memsig.config.compose import build
from memsig.runtime.atomic import write_atomic
from memsig.runtime.errors import ConfigError, MemsigError

FORMAT = "memsig/base@1"


def build_network(model_cfg: Mapping, vocab_size: int) -> nn.Module:
    """The network named by `model.net`, sized for the vocabulary."""
    try:
        return build(model_cfg["net"], vocab_size=vocab_size)
    except ValueError as err:
        raise ConfigError(f"model: {err}") from err


def initial_network(model_cfg: Mapping, vocab_size: int, seed: int) -> nn.Module:
    """The network as base training initialises it from `seed`: the model trained, and the
    untrained baseline probed against it, start from the same weights."""
    L.seed_everything(seed, workers=True, verbose=False)
    return build_network(model_cfg, vocab_size)


def save_base_checkpoint(
    path: Path,
    net: nn.Module,
    model_cfg: Mapping,
    vocab: list[str],
    unit: str,
    metrics: Mapping,
    target: int = -1,
    inputs: Mapping | None = None,
) -> None:
    """`target` is the offset the network was trained to emit (CharLM.target): -1 for a
    language model; checkpoints without the key are language models. `inputs` (plan.inputs)
    records the seed and data fingerprint the model was trained from, which a rerun in the
    same run dir must match."""
    payload = {
        "format": FORMAT,
        "model": dict(model_cfg),
        "vocab": list(vocab),
        "unit": unit,
        "target": int(target),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
    }
    if inputs is not None:
        payload["inputs"] = {key: inputs[key] for key in ("seed", "data_sha256")}
    write_atomic(path, lambda tmp: torch.save(payload, tmp))


def load_base_checkpoint(path: Path) -> dict:
    """The checkpoint's payload, refusing anything that is not a memsig base checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise MemsigError(
            f"base_ckpt={path}: no such file; point base_ckpt at a run's checkpoints/base.ckpt"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise MemsigError(
            f"base_ckpt={path} is not a memsig base checkpoint (it cannot be loaded safely: "
            f"{type(err).__name__}); use the checkpoints/base.ckpt written by `stage=base`"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MemsigError(
            f"base_ckpt={path} is not a memsig base checkpoint (no '{FORMAT}' marker); "
            "use the checkpoints/base.ckpt written by `stage=base`"
        )
    return payload


def checkpoint_target(payload: Mapping) -> int:
    """The offset a checkpoint's network was trained to emit (-1: the next symbol)."""
    return int(payload.get("target", -1))


def restore_network(payload: Mapping) -> nn.Module:
    """Rebuild the network a checkpoint describes and load its weights (eval mode)."""
    net = build_network(payload["model"], len(payload["vocab"]))
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise MemsigError(f"checkpoint weights do not fit its model config: {err}") from err
    return net.eval()


def file_digest(path: Path) -> str:
    """sha256 of a file: identifies the exact model behind a feature cache."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
