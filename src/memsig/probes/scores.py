"""Per view x offset test statistics, as a torchmetrics metric whose sums are added over DDP
ranks whenever its results are read."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric

from memsig.runtime.distributed import all_reduce_sum
from memsig.runtime.units import nats_to_bits


class HeadLosses(Metric):
    """Summed cross-entropy (nats) of every view x head, and the number of rows: all that
    early stopping and the choice of each offset's best head read from a validation pass, so
    that pass costs no argmax and no per-symbol tallies (which grow with heads x classes).

    Under DDP each rank sums its share of the pass (a sharded loader) and `results` adds the
    sums over the ranks (an explicit all-reduce of every state, in the order they were added,
    which works for CPU states under NCCL too): every rank reads the scores of the whole pass.
    torchmetrics' own synchronisation in `compute` is off, so nothing is added twice."""

    full_state_update = False

    def __init__(self, num_views: int, num_offsets: int) -> None:
        super().__init__(sync_on_compute=False)
        self.add_state("nll", torch.zeros(num_views, num_offsets, dtype=torch.float64), "sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, nll: torch.Tensor) -> None:
        """nll: [views, batch, offsets]."""
        self.nll += nll.double().sum(1)  # float64 sums: the same whatever the batches
        self.count += nll.shape[1]

    def compute(self) -> dict[str, torch.Tensor]:
        """torchmetrics' entry point: `results` (a subclass's, with all it sums)."""
        return self.results()

    def results(self) -> dict[str, torch.Tensor]:
        """Cross-entropy (bits) per view x offset and the rows scored, summed over DDP ranks,
        in these shapes even for one view x one offset (torchmetrics squeezes one-element
        results of `compute` to scalars). Every rank must call it: the sums are exchanged."""
        return self._scores(self._summed())

    def _summed(self) -> dict[str, torch.Tensor]:
        return {name: all_reduce_sum(state.clone()) for name, state in self.metric_state.items()}

    @staticmethod
    def _scores(total: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"count": total["count"], "xent_bits": nats_to_bits(total["nll"] / total["count"])}


class HeadScores(HeadLosses):
    """HeadLosses plus correct predictions for every view x offset head, and correct
    predictions and counts per offset x target symbol (what the test pass reports).

    With `documents` (the document index of every row of the scored dataset), the same sums
    are also kept per document, so a bootstrap over documents resamples sums instead of
    rescoring tokens; each batch names its rows, so any order or share of them adds up."""

    def __init__(
        self,
        num_views: int,
        num_offsets: int,
        num_classes: int,
        documents: np.ndarray | None = None,
    ) -> None:
        super().__init__(num_views, num_offsets)
        self.num_classes = num_classes
        shape, by_symbol = (num_views, num_offsets), (num_views, num_offsets * num_classes)
        for name, size in (("correct", shape), ("correct_by_symbol", by_symbol)):
            self.add_state(name, torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")
        count_shape = (num_offsets * num_classes,)
        self.add_state(
            "count_by_symbol", torch.zeros(count_shape, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.documents = None if documents is None else torch.as_tensor(documents).long()
        if self.documents is not None:
            per_doc = (int(self.documents.max()) + 1, num_views, num_offsets)
            for name in ("doc_nll", "doc_correct"):
                self.add_state(name, torch.zeros(per_doc, dtype=torch.float64), "sum")
            self.add_state("doc_count", torch.zeros(per_doc[0], dtype=torch.float64), "sum")

    def update(
        self, nll: torch.Tensor, correct: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor
    ) -> None:
        """nll, correct: [views, batch, offsets]; targets: [batch, offsets]; rows: [batch], each
        row's index in the scored dataset (which names its document)."""
        super().update(nll)
        self.correct += correct.sum(1).double()
        offsets = torch.arange(targets.shape[1], device=targets.device)
        index = (targets + offsets * self.num_classes).reshape(-1)  # (offset, symbol) bins
        self.count_by_symbol.index_add_(0, index, torch.ones_like(index, dtype=torch.float64))
        hits = correct.reshape(len(correct), -1).double()
        self.correct_by_symbol.index_add_(1, index, hits)
        if self.documents is not None:
            doc = self.documents[rows.cpu()].to(nll.device)
            self.doc_nll.index_add_(0, doc, nll.transpose(0, 1).double())
            self.doc_correct.index_add_(0, doc, correct.transpose(0, 1).double())
            self.doc_count.index_add_(0, doc, torch.ones_like(doc, dtype=torch.float64))

    def results(self) -> dict[str, torch.Tensor]:
        """Accuracy and cross-entropy per view x offset; correct predictions and counts per
        offset x target symbol (from which any class of symbols gets its accuracy); the number
        of rows scored; with documents, the per-document sums [documents, views, offsets] and
        counts; summed over DDP ranks (see HeadLosses.results)."""
        total = self._summed()
        offsets = total["nll"].shape[1]
        out = {
            **self._scores(total),
            "accuracy": total["correct"] / total["count"],
            "correct_by_symbol": total["correct_by_symbol"].view(-1, offsets, self.num_classes),
            "count_by_symbol": total["count_by_symbol"].view(offsets, self.num_classes),
        }
        if self.documents is not None:
            out.update({name: total[name] for name in ("doc_nll", "doc_correct", "doc_count")})
        return out


def head_losses(logits: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (nats) [views, batch, offsets] of each view's logits [batch, offsets,
    classes]. Views are scored one by one: cheaper than stacking every view's logits."""
    return torch.stack(
        [F.cross_entropy(z.permute(0, 2, 1), targets, reduction="none") for z in logits]
    )


def head_statistics(
    logits: list[torch.Tensor], targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What HeadScores.update takes before the rows: cross-entropy, hits, and the targets."""
    hits = torch.stack([_predictions(z) == targets for z in logits])
    return head_losses(logits, targets), hits, targets


def _predictions(logits: torch.Tensor) -> torch.Tensor:
    """Argmax class [batch, offsets] of logits [batch, offsets, classes]. Class-major heads
    give a transposed view, and a contiguous copy then argmax over the last axis is several
    times faster than argmax across a strided axis."""
    return logits.contiguous().argmax(-1)


class TestScoring:
    """What every probe kind (`views`, `num_offsets`, `num_classes`) shares for its test pass:
    HeadScores over views x offsets, with per-document sums once `keep_document_sums` is
    called (a bootstrap over documents)."""

    documents: np.ndarray | None = None

    def keep_document_sums(self, documents: np.ndarray) -> None:
        """Also sum the test scores per document (`documents[i]`: the document of test row i)."""
        self.documents = np.asarray(documents)

    def new_test_scores(self) -> HeadScores:
        return HeadScores(len(self.views), self.num_offsets, self.num_classes, self.documents)
