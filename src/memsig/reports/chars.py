"""Character-level probe results (chars.json): which characters a state keeps, and for how long.

The signature averages over all characters; this record keeps what the averages hide. For
every probed view it stores, on a passage of the probe-test part, the probability the probe at
step p + k gives the true character x_p (how well x_p is recovered k steps later), and over
the whole probe-test part the accuracy per character class and offset.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from memsig.extraction.loader import PositionBatches, position_loader
from memsig.probes.fit import Probe
from memsig.runtime.atomic import write_json_atomic
from memsig.runtime.errors import MemsigError

SCHEMA = "memsig/chars@1"
FILENAME = "chars.json"
VOWELS = set("aeiouAEIOU")
CLASSES = {
    "letters": lambda c: c.isalpha(),
    "vowels": lambda c: c in VOWELS,
    "consonants": lambda c: c.isalpha() and c not in VOWELS,
    "digits": lambda c: c.isdigit(),
    "space": lambda c: c.isspace(),
    "punctuation": lambda c: not (c.isalnum() or c.isspace()),
    "upper case": lambda c: c.isupper(),
}


def class_members(vocab: Sequence[str]) -> np.ndarray:
    """[V, classes] membership of every single-character symbol (multi-character ones, such as
    "<unk>", belong to no class)."""
    return np.array(
        [[len(s) == 1 and test(s) for test in CLASSES.values()] for s in vocab], dtype=np.float64
    )


def passage_span(dataset: PositionBatches, length: int, newline: int | None) -> tuple[int, int]:
    """First and last+1 position of a passage whose characters are probed at every offset;
    it starts after the first line break when there is one, so it reads from a line start."""
    offsets, positions = dataset.offsets, dataset.positions
    lo, hi = positions[0] - offsets.min(), positions[-1] - offsets.max() + 1
    breaks = np.flatnonzero(dataset.tokens[lo:hi] == newline) if newline is not None else []
    start = lo + int(breaks[0]) + 1 if len(breaks) and breaks[0] + 1 < hi - lo else lo
    return start, min(hi, start + length)


@torch.no_grad()
def character_record(
    probe: Probe,
    test: PositionBatches,
    vocab: Sequence[str],
    passage_chars: int,
    batch_size: int,
) -> dict:
    """Class accuracies from the probe's test counts per symbol, and the passage's recall from
    a pass over the few positions that decode it."""
    newline = list(vocab).index("\n") if "\n" in vocab else None
    start, stop = passage_span(test, passage_chars, newline)
    offsets = test.offsets
    members = torch.as_tensor(class_members(vocab))  # [V, classes]
    results = probe.test_results
    correct = torch.einsum("vkc,cm->vmk", results["correct_by_symbol"], members)
    counts = torch.einsum("kc,cm->mk", results["count_by_symbol"], members)
    accuracy = (correct / counts).numpy()  # NaN where a class never occurs

    views = probe.views
    device = probe.best_val_xent.device
    recall = np.zeros((len(views), len(offsets), stop - start), dtype=np.float32)
    near = (test.positions >= start + offsets.min()) & (test.positions < stop + offsets.max())
    window = test.replaced(positions=test.positions[near])
    for features, targets, rows in position_loader(window, batch_size, shuffle=False, shard=False):
        positions = window.positions[rows.numpy()]
        features = {v: x.to(device) for v, x in features.items()}
        logp = torch.stack(probe.logits(features)).log_softmax(-1).cpu()  # [views, b, K, V]
        p_true = logp.gather(-1, targets[None, ..., None].expand(len(views), -1, -1, 1)).exp()
        source = positions[:, None] - offsets[None, :]  # x_p decoded at t = p + k
        row, col = np.nonzero((source >= start) & (source < stop))
        recall[:, col, source[row, col] - start] = p_true[:, row, col, 0].numpy()
    return {
        "schema": SCHEMA,
        "vocab": list(vocab),
        "offsets": offsets.tolist(),
        "passage": {"start": int(start), "tokens": test.tokens[start:stop].tolist()},
        "class_counts": {c: counts[i].tolist() for i, c in enumerate(CLASSES)},
        "views": {
            v: {
                "recall": np.round(recall[i].astype(np.float64), 4).tolist(),
                "class_accuracy": {
                    c: [None if np.isnan(a) else float(a) for a in accuracy[i, j]]
                    for j, c in enumerate(CLASSES)
                },
            }
            for i, v in enumerate(views)
        },
    }


def save_chars(run_dir: Path, record: dict) -> Path:
    path = Path(run_dir) / FILENAME
    write_json_atomic(path, record)
    return path


def load_chars(run_dir: Path) -> dict:
    """A run's chars.json, or an error that says how to make one."""
    path = Path(run_dir) / FILENAME
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise MemsigError(
            f"{run_dir} has no {FILENAME}: give a run dir whose signature stage has finished "
            "(rerun it with stage=signature base_ckpt=RUN/checkpoints/base.ckpt if it predates "
            "character-level results)"
        ) from None
    except json.JSONDecodeError as err:
        raise MemsigError(f"{path} is not valid JSON ({err}): rerun the signature stage") from None
    if record.get("schema") != SCHEMA:
        raise MemsigError(f"{path} is not a memsig character record (schema {SCHEMA!r})")
    return record
