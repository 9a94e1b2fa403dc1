"""Memory beyond what is still in view (`probe.condition_on=m`).

A probe that decodes x_{t-k} from a state may read memory, or may guess x_{t-k} from the last
few inputs, which any model sees. For each probed view this trains, alongside the plain heads
and in the same fused MultiOffsetProbe, a head on the state joined with the last m inputs
(one-hot, built per batch from the token stream, never cached) and, once, a head on those m
inputs alone. Both are linear softmax heads trained the same way, so the difference of their
test cross-entropies,

    beyond_bits[k] = xent(last m inputs) - xent(state + last m inputs),

estimates I(x_{t-k}; state | last m inputs): what the state adds to what is in view. It is
near zero at offsets k < m (the input is in view) and for a state that is a function of the
last m inputs, and summarised per view like the capacity (`capacity_beyond_context`).

With m = 0 nothing is in view: the context head is the class prior, and the memory beyond
view is the plain information of the signature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from memsig.probes.loader import Batch, PositionBatches
from memsig.probes.offsets import input_windows
from memsig.signature import capacity


def context_view(m: int) -> str:
    """Name of the head that sees the last m inputs alone."""
    return f"last{m}"


def joined_view(view: str, m: int) -> str:
    """Name of the head that sees `view` together with the last m inputs."""
    return f"{view}+last{m}"


def context_onehot(
    tokens: np.ndarray, positions: np.ndarray, m: int, vocab_size: int
) -> np.ndarray:
    """One-hot of x_{t-m+1..t} per position, concatenated oldest first, [b, m * V] float32;
    slots before the stream's start are all zeros."""
    windows = input_windows(tokens, positions, m, pad=-1)
    onehot = windows[..., None] == np.arange(vocab_size)
    return onehot.reshape(len(positions), m * vocab_size).astype(np.float32)


class ConditionedBatches(PositionBatches):
    """PositionBatches whose features also hold the context head's input and every view
    joined with it (see the module docstring)."""

    def __init__(
        self, base: PositionBatches, views: Sequence[str], m: int, vocab_size: int
    ) -> None:
        super().__init__(
            base.views, base.tokens, base.positions, base.offsets, base.anchors, base.labels
        )
        self.joined, self.m, self.vocab_size = list(views), m, vocab_size

    def __getitem__(self, index: list[int]) -> Batch:
        features, targets, rows = super().__getitem__(index)
        pos = self.positions[rows.numpy()]
        context = torch.from_numpy(context_onehot(self.tokens, pos, self.m, self.vocab_size))
        features[context_view(self.m)] = context
        for v in self.joined:
            features[joined_view(v, self.m)] = torch.cat([features[v], context], dim=1)
        return features, targets, rows


class Conditioning:
    """What `probe.condition_on` adds to the signature stage: extra heads, their inputs, and
    the `conditional_memory` record. With m = None it adds nothing."""

    def __init__(self, m: int | None, view_dims: Mapping[str, int], vocab_size: int) -> None:
        self.m, self.views, self.vocab_size = m, dict(view_dims), vocab_size
        self.derived = bool(m)  # m = 0: the context head is the class prior

    @property
    def probe_dims(self) -> dict[str, int]:
        """Every head's input width: the plain views first, then the derived ones."""
        if not self.derived:
            return dict(self.views)
        width = self.m * self.vocab_size
        joined = {joined_view(v, self.m): d + width for v, d in self.views.items()}
        return {**self.views, context_view(self.m): width, **joined}

    def batches(self, base: PositionBatches) -> PositionBatches:
        if not self.derived:
            return base
        return ConditionedBatches(base, list(self.views), self.m, self.vocab_size)

    def record(
        self,
        head_names: Sequence[str],
        results: Mapping[str, torch.Tensor],
        offsets: Sequence[int],
        baseline: Mapping[str, Sequence[float]],
    ) -> dict:
        """The `conditional_memory` entry of signature.json (see the module docstring);
        `baseline` is the signature's (majority accuracy and prior entropy per offset)."""
        prior_entropy_bits = baseline["prior_entropy_bits"]
        row = {v: i for i, v in enumerate(head_names)}

        def scores(view: str) -> dict[str, list[float]]:
            accuracy = results["accuracy"][row[view]].tolist()
            xent = results["xent_bits"][row[view]].tolist()
            info = [p - x for p, x in zip(prior_entropy_bits, xent, strict=True)]
            return {"accuracy": accuracy, "xent_bits": xent, "info_bits": info}

        if self.derived:
            context = scores(context_view(self.m))
        else:
            context = {
                "accuracy": list(baseline["majority_accuracy"]),
                "xent_bits": list(prior_entropy_bits),
                "info_bits": [0.0] * len(offsets),
            }
        views = {}
        for v in self.views:
            joined = scores(joined_view(v, self.m) if self.derived else v)
            beyond = [c - j for c, j in zip(context["xent_bits"], joined["xent_bits"], strict=True)]
            views[v] = {
                **joined,
                "beyond_bits": beyond,
                "capacity_beyond_context": capacity(offsets, beyond, prior_entropy_bits),
            }
        return {"condition_on": self.m, "context": context, "views": views}
