"""memsig from Python: the memory signature of a model object, in one call.

`signature_of` composes the packaged Hydra config (`model=external`, the probe kind, any
overrides) and runs the same pipeline as the `memsig` command on the given model object and
tokens: the same extraction, probes, scores, measures and files in its run dir.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from memsig.config.compose import CONFIG_DIR
from memsig.data.corpus import PARTS, Corpus
from memsig.models.external import ExternalNetwork
from memsig.pipeline.run import run
from memsig.reports.figures import signature_figure
from memsig.runtime.atomic import write_json_atomic
from memsig.runtime.errors import ConfigError
from memsig.signature import record

TEST_FRACTION = 0.3  # a single token stream: its last 30% tests the probes, the rest fits them


class Signature(record.Signature):
    """A model's memory signature (`signature.json`, schema `memsig/signature@1`).

    Fields: `model` (name, params, checkpoint, metrics), `data` (name, unit, vocab, probe
    token counts), `probe` (kind, its config), `offsets` (k >= 0: the input k steps back;
    k < 0: |k| steps ahead), `baseline` (`majority_accuracy`, `prior_entropy_bits`, one value
    per offset), `views` ({view name: ViewScores with `dim`, and per offset `accuracy`,
    `xent_bits`, `info_bits`, plus `capacity`}) and `extra` (summary, health and the
    optional measures' records). `save(directory)` writes signature.json and signature.csv;
    `Signature.load(path)` reads one back; `plot()` draws the figure memsig saves as
    signature.png.
    """

    def plot(self, title: str | None = None):
        """The signature figure (information and accuracy per offset, one line per view)."""
        return signature_figure(self, title)


def signature_of(
    model: nn.Module,
    tokens: str | Sequence | np.ndarray | torch.Tensor | Mapping,
    *,
    vocab: Sequence[str],
    offsets: Iterable[int] = range(11),
    views: Sequence[str] | None = None,
    probe: str = "linear",
    run_dir: str | Path | None = None,
    test_fraction: float = TEST_FRACTION,
    **overrides,
) -> Signature:
    """The memory signature of `model` (a trained language model) on `tokens`.

    `model`: any module `model=external` reads (forward(tokens[B, T]) -> logits [B, T, V] or
    a tuple whose first item is; its nn.LSTM / nn.GRU layers are the views) or one of
    memsig's own networks. `vocab`: the model's symbols, index = input id. `tokens`: text
    (each character a symbol), a sequence of symbols or of ids, or a mapping of parts
    (`probe_train`, `probe_test`, optionally `val` for `val/bpc`); a single stream is cut
    into probe-train and its last `test_fraction` for probe-test. `offsets`, `views` and
    `probe` (linear | mlp | ridge) choose what is probed; `overrides` are any other config
    keys, dotted (`**{"probe.max_epochs": 5}`) or with `__` for the dots
    (`probe__max_epochs=5`), and config groups (`logger="csv"`). Everything lands in
    `run_dir` (default: a new folder under ./outputs/signature_of/).
    """
    vocab = [str(symbol) for symbol in vocab]
    run_dir = Path(run_dir or Path("outputs") / "signature_of" / _now()).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    vocab_file = run_dir / "vocab.json"
    write_json_atomic(vocab_file, vocab)
    cls = type(model)
    settings = {
        "model": "external",
        "probe": probe,
        "logger": "none",
        "stage": "signature",
        "paths.output_dir": str(run_dir),
        "model.name": cls.__name__,
        "model.target": f"{cls.__module__}.{cls.__qualname__}",  # recorded, not imported
        "model.weights": None,  # the object's own
        "model.vocab": str(vocab_file),
        "probe.offsets": list(offsets),
        "probe.views": None if views is None else list(views),
    }
    settings.update({key.replace("__", "."): value for key, value in overrides.items()})
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", [f"{key}={_hydra_value(v)}" for key, v in settings.items()])
    network = model
    if not (hasattr(model, "views") and hasattr(model, "view_dims")):  # memsig's own
        hooks = OmegaConf.to_container(cfg.model.hooks) if cfg.model.hooks else None
        network = ExternalNetwork(model, len(vocab), hooks)
    corpus = token_corpus(tokens, vocab, test_fraction)
    training, device = model.training, next(model.parameters(), torch.empty(0)).device
    try:  # the run puts the model in eval mode and on the extraction device
        signature = run(cfg, network=network, corpus=corpus)
    finally:  # the caller's model as it was
        model.train(training).to(device)
    return Signature(**vars(signature))


def token_corpus(
    tokens: str | Sequence | np.ndarray | torch.Tensor | Mapping,
    vocab: Sequence[str],
    test_fraction: float = TEST_FRACTION,
) -> Corpus:
    """The probe data as a corpus numbered by its own symbols (the plan renumbers them by the
    model's vocabulary): parts given by name, or one stream cut into probe-train and
    probe-test. Parts not given are empty (nothing is trained)."""
    if isinstance(tokens, Mapping):
        unknown = sorted(set(tokens) - set(PARTS))
        if unknown or not {"probe_train", "probe_test"} <= set(tokens):
            raise ConfigError(
                f"tokens by part need probe_train and probe_test (and may have val), not "
                f"{sorted(tokens)}"
            )
        streams = {part: _symbols(tokens[part], vocab) for part in tokens}
    else:
        if not 0 < test_fraction < 1:
            raise ConfigError(f"test_fraction={test_fraction}: must be in (0, 1), e.g. 0.3")
        stream = _symbols(tokens, vocab)
        cut = len(stream) - round(test_fraction * len(stream))
        streams = {"probe_train": stream[:cut], "probe_test": stream[cut:]}
    symbols = sorted(set().union(*map(set, streams.values())))
    ids = {symbol: i for i, symbol in enumerate(symbols)}
    parts = {
        part: np.array([ids[s] for s in streams.get(part, [])], dtype=np.int64) for part in PARTS
    }
    return Corpus("tokens", "char", tuple(symbols), parts, {})


def _symbols(tokens, vocab: Sequence[str]) -> list[str]:
    """A stream as symbols: text's characters, symbols as they are, ids looked up in vocab."""
    if isinstance(tokens, str):
        return list(tokens)
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.cpu().numpy()
    items = list(np.asarray(tokens).reshape(-1)) if isinstance(tokens, np.ndarray) else tokens
    if all(isinstance(t, str) for t in items):
        return list(items)
    ids = np.asarray(items)
    if ids.dtype.kind not in "iu" or (len(ids) and (ids.min() < 0 or ids.max() >= len(vocab))):
        raise ConfigError(
            f"tokens must be text, symbols, or ids in [0, {len(vocab)}) (the model's input ids)"
        )
    return [vocab[i] for i in ids]


def _hydra_value(value) -> str:
    """A Python value as Hydra's override grammar writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple | range):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    text = str(value)
    if re.fullmatch(r"[\w./@-]+", text):
        return text
    return json.dumps(text)  # quoted, escapes included


def _now() -> str:
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
