"""Lightning modules that train a decoder for every view x offset at once.

`FusedProbe` holds what every trained probe kind shares: whitened inputs, one module per view
whose parameters all carry the head (L2 strength x offset) axis first, so every head is
computed in the same fused tensor operations, per-head best-validation weights, so a head that
starts to overfit does not spoil the others, and the choice of each offset's L2 strength on
validation. `MultiOffsetProbe` is the linear softmax kind: a single linear layer per view whose
outputs are all heads' logits, one matmul per view whatever the number of offsets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from memsig.probes.prior_guard import PriorGuard
from memsig.probes.scores import HeadLosses, TestScoring, head_losses, head_statistics
from memsig.runtime.errors import ConfigError, check_finite_loss


class FusedProbe(TestScoring, L.LightningModule):
    """Decoders from whitened state views to the input at every offset, trained together.

    Every offset has one head per L2 strength (`strengths`: a penalty strength/2 |W|^2 on the
    head's weights, not its biases, added to its mean cross-entropy); all of them train at
    once, each keeps its best-validation weights (a head that starts to overfit does not spoil
    the others), and per view x offset the strength with the least validation cross-entropy is
    the one tested. The prior guard (probes/prior_guard.py) keeps unseen symbols out and
    replaces a head by the prior where the prior does better on validation. `indicators`
    (per view, a boolean per column) marks one-hot columns, which are centred, not whitened
    (see `whitening`).

    Subclasses build one module per view (`build_head`) whose parameters all have a leading
    axis that is a multiple of `num_heads` = strengths x offsets (`head_rows` says which rows
    belong to which head, heads strength-major: head g * offsets + k; rows grouped by head
    unless a subclass lays them out otherwise), name the parameters the penalty applies to
    (`weight_names`; `input_axis` for those reading the input), and map a view's features to
    logits [batch, heads, classes] of its whitened features (`head_logits`)."""

    weight_names: tuple[str, ...] = ()
    input_axis: dict[str, int] = {}  # per weight name reading the input, its input-column axis

    def __init__(
        self,
        view_dims: Mapping[str, int],
        num_offsets: int,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        mean: Mapping[str, np.ndarray],
        cov: Mapping[str, np.ndarray],
        strengths: Sequence[float] = (0.0,),
        guard: PriorGuard | None = None,
        min_delta: float = 0.0,
        lr_decay: float = 1.0,
        indicators: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.views = list(view_dims)
        self.num_offsets = num_offsets
        self.num_classes = num_classes
        self.strengths = [float(s) for s in strengths]
        self.num_strengths = len(self.strengths)
        self.num_heads = self.num_strengths * num_offsets
        self.min_delta, self.lr_decay = min_delta, lr_decay
        self.optimizer_factory = optimizer
        self.heads = nn.ModuleList(self.build_head(view_dims[v]) for v in self.views)
        self.guard = guard or PriorGuard.neutral(len(self.views), num_offsets, num_classes)
        per_head = torch.as_tensor(self.strengths).float().repeat_interleave(num_offsets)
        self.register_buffer("head_strength", per_head)
        for i, v in enumerate(self.views):
            self.register_buffer(f"mean{i}", torch.as_tensor(mean[v], dtype=torch.float32))
            marked = (indicators or {}).get(v)
            self.register_buffer(f"whiten{i}", whitening(cov[v], indicators=marked))
        # per view with indicator columns, each input column's weight in the L2 penalty: the
        # column's fit variance on indicators (the penalty on standardised columns, which
        # whitened columns get too, and scikit-learn's), 1 on whitened ones; views without
        # indicator columns have no such buffer
        for i, v in enumerate(self.views):
            marked = (indicators or {}).get(v)
            if marked is not None and np.any(marked):
                scale = np.where(marked, np.diag(cov[v]), 1.0)
                self.register_buffer(f"column_penalty{i}", torch.as_tensor(scale).float())
        for i, head in enumerate(self.heads):
            for name, param in head.named_parameters():
                self.register_buffer(_best_name(i, name), param.detach().clone())
        shape = (len(self.views), self.num_heads)
        self.register_buffer("best_val_xent", torch.full(shape, np.inf))
        # early stopping: per view x offset, the last best (over strengths) by more than
        # min_delta, and how many such improvements there were so far (training stops once
        # none comes)
        self.register_buffer("reference_xent", torch.full((len(self.views), num_offsets), np.inf))
        self.register_buffer("improvements", torch.zeros((), dtype=torch.long))
        self.register_buffer("chosen", torch.zeros(len(self.views), num_offsets, dtype=torch.long))
        # validation reads only every head's cross-entropy (early stopping, best heads)
        self.val_scores = HeadLosses(len(self.views), self.num_heads)
        self.test_scores = self.new_test_scores()
        self.test_results: dict[str, torch.Tensor] | None = None

    def build_head(self, dim: int) -> nn.Module:
        raise NotImplementedError

    def head_logits(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Logits [batch, heads, classes] of view `index`'s features x (raw, not whitened)."""
        raise NotImplementedError

    def head_rows(self, per_head: torch.Tensor, rows: int) -> torch.Tensor:
        """A per-head vector [heads] spread over a parameter's `rows` leading rows."""
        return per_head.repeat_interleave(rows // self.num_heads)

    def whitened(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - getattr(self, f"mean{index}")) @ getattr(self, f"whiten{index}")

    def all_logits(self, features: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Per view, every head's scores [batch, strengths, offsets, classes], unseen symbols
        at their prior."""
        shape = (self.num_strengths, self.num_offsets)
        return [
            self.guard.log_probs(self.head_logits(i, features[v]).unflatten(1, shape))
            for i, v in enumerate(self.views)
        ]

    def logits(self, features: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Per view, the chosen heads' scores [batch, offsets, classes]."""
        out = []
        for i, z in enumerate(self.all_logits(features)):
            pick = self.chosen[i].view(1, 1, -1, 1).expand(len(z), 1, -1, z.shape[-1])
            out.append(self.guard.guarded(i, z.gather(1, pick).squeeze(1)))
        return out

    def every_head(self, features: Mapping[str, torch.Tensor], targets: torch.Tensor):
        """Logits [batch, heads, classes] per view, and the targets of every head."""
        logits = [z.flatten(1, 2) for z in self.all_logits(features)]
        return logits, targets.repeat(1, self.num_strengths)

    def penalty(self) -> torch.Tensor:
        """Sum over heads of strength/2 |weights|^2, input columns weighted by their
        `column_penalty` where the view has indicator columns."""
        total = self.head_strength.new_zeros(())
        for i, head in enumerate(self.heads):
            for name in self.weight_names:
                param = getattr(head, name)
                rows = self.head_rows(self.head_strength, len(param))
                squares = param.square()
                column = getattr(self, f"column_penalty{i}", None)
                if column is not None and name in self.input_axis:
                    shape = [1] * squares.dim()
                    shape[self.input_axis[name]] = -1
                    squares = squares * column.view(shape)
                total = total + (rows * squares.flatten(1).sum(1)).sum() / 2
        return total

    def warm_start(self, batches) -> None:
        """A starting point better than random, where the kind has one (none by default)."""

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        features, targets, _ = batch
        nll = head_losses(*self.every_head(features, targets))
        loss = nll.mean(1).sum() + self.penalty()
        check_finite_loss(loss, self.global_step, "the probe loss", "lower probe.optimizer.lr")
        self.log("probe/train/loss", nll.mean(), prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        features, targets, _ = batch
        self.val_scores.update(head_losses(*self.every_head(features, targets)))

    def on_validation_epoch_end(self) -> None:
        # the whole validation block's cross-entropy (sums added over DDP ranks), so every
        # rank keeps the same heads
        xent = self.val_scores.results()["xent_bits"].to(self.best_val_xent)
        self.val_scores.reset()
        self.keep_best(xent)
        # the same value on every rank: sync_dist only confirms it
        self.log("probe/val/xent_bits", xent.mean(), sync_dist=True)
        self.log(
            "probe/val/best_xent_bits", self.best_val_xent.mean(), prog_bar=True, sync_dist=True
        )
        self.log("probe/val/improvements", self.improvements.float(), sync_dist=True)

    @torch.no_grad()
    def keep_best(self, xent: torch.Tensor) -> None:
        """Snapshot the weights of every head whose validation cross-entropy ([views, heads],
        bits) beats its best so far; the other heads keep their earlier snapshot. Count the
        heads that beat their last counted best by more than min_delta."""
        improved = xent < self.best_val_xent
        self.best_val_xent = torch.where(improved, xent, self.best_val_xent)
        for i, head in enumerate(self.heads):
            for name, param in head.named_parameters():
                rows = self.head_rows(improved[i], len(param))
                getattr(self, _best_name(i, name))[rows] = param[rows]
        best = xent.unflatten(1, (self.num_strengths, self.num_offsets)).min(1).values
        counted = best < self.reference_xent - self.min_delta
        self.reference_xent = torch.where(counted, best, self.reference_xent)
        self.improvements += counted.sum()

    @torch.no_grad()
    def use_best_weights(self) -> None:
        """Load every head's best-validation weights, choose per view x offset the strength
        with the least validation cross-entropy, and let the prior replace the heads it beats
        (called before testing)."""
        for i, head in enumerate(self.heads):
            for name, param in head.named_parameters():
                param.copy_(getattr(self, _best_name(i, name)))
        by_strength = self.best_val_xent.unflatten(1, (self.num_strengths, self.num_offsets))
        best, self.chosen = by_strength.min(1)
        self.guard.settle(best)

    def on_test_start(self) -> None:
        if torch.isfinite(self.best_val_xent).all():
            self.use_best_weights()
        self.test_scores = self.new_test_scores().to(self.device)  # with documents, if asked

    def test_step(self, batch, batch_idx: int) -> None:
        features, targets, rows = batch
        self.test_scores.update(*head_statistics(self.logits(features), targets), rows)

    def on_test_epoch_end(self) -> None:
        self.test_results = {k: v.cpu() for k, v in self.test_scores.results().items()}
        self.test_scores.reset()

    def configure_optimizers(self) -> dict:
        optimizer = self.optimizer_factory(params=self.heads.parameters())
        decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, self.lr_decay)
        return {"optimizer": optimizer, "lr_scheduler": decay}

    def chosen_strengths(self) -> dict[str, list[float]]:
        """Per view, the L2 strength chosen at every offset (signature.json's `probe.l2`)."""
        return {
            v: [self.strengths[c] for c in self.chosen[i].tolist()]
            for i, v in enumerate(self.views)
        }


class MultiOffsetProbe(FusedProbe):
    """Linear softmax decoders: one linear layer per view gives every head's logits.

    Its output rows are class-major (row c * heads + h scores class c for head h), so the
    logits come out as a contiguous [batch, classes, heads] block: the layout the
    cross-entropy reads without a copy, which keeps the per-head cost of a step small."""

    weight_names = ("weight",)
    input_axis = {"weight": 1}

    def build_head(self, dim: int) -> nn.Module:
        return nn.Linear(dim, self.num_heads * self.num_classes)

    def head_logits(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """The heads read whitened features, (x - mean) @ whiten @ weight.T: folding the
        whitening into the weights first (a [rows, D] x [D, D] product) costs a fraction of
        whitening every batch ([batch, D] x [D, D]) and gives the same logits."""
        head = self.heads[index]
        weight = head.weight @ getattr(self, f"whiten{index}")  # whiten is symmetric
        centred = x.float() - getattr(self, f"mean{index}")
        logits = F.linear(centred, weight, head.bias).view(len(x), self.num_classes, -1)
        return logits.transpose(1, 2)  # [batch, heads, classes], a view

    def head_rows(self, per_head: torch.Tensor, rows: int) -> torch.Tensor:
        return per_head.repeat(rows // self.num_heads)  # class-major rows

    @torch.no_grad()
    def warm_start(self, batches) -> None:
        """Start every head at the linear discriminant of its offset, from one pass over the
        training batches. In whitened space the total covariance is the identity, so the
        within-class one is I - B (B = sum_c p_c m_c m_c^T, the class means' scatter, rank
        < classes): with it shrunk to (1 + LDA_SHRINKAGE) I - B, the weights are its inverse
        times the class means (Woodbury: a classes x classes solve per offset) and the biases
        log prior - m_c^T w_c / 2. Where the classes separate, the weights are large from the
        start; where the state holds nothing, B is small and so are they. Every strength
        starts there; gradient training then only refines. On centred one-hot columns (not
        whitened) the total covariance is diag(p) - p p^T, below the identity, so the start
        there is a shrunk, cautious one."""
        rows = self.num_offsets * self.num_classes
        sums = [torch.zeros(rows, head.in_features, dtype=torch.float64) for head in self.heads]
        counts = torch.zeros(rows, dtype=torch.float64)
        for features, targets, _ in batches:
            onehot = F.one_hot(targets, self.num_classes).transpose(1, 2)  # class-major
            onehot = onehot.reshape(len(targets), rows).float()  # columns as (class, offset)
            counts += onehot.sum(0).double()
            for i, v in enumerate(self.views):
                x = self.whitened(i, features[v])
                sums[i] += (onehot.T @ x).double()  # class sums for every offset in one matmul
        by_class = counts.view(self.num_classes, self.num_offsets)
        prior = by_class / by_class.sum(0)
        for head, total_x in zip(self.heads, sums, strict=True):
            means = total_x / counts.clamp_min(1).unsqueeze(1)
            means = means.view(self.num_classes, self.num_offsets, -1).transpose(0, 1)  # [K,V,D]
            weights = _discriminant(means, prior.T)
            bias = prior.T.clamp_min(1e-9).log() - 0.5 * (means * weights).sum(-1)  # [K, V]
            weight_rows = weights.transpose(0, 1).unsqueeze(1)  # [V, 1, K, D]
            head.weight.copy_(weight_rows.expand(-1, self.num_strengths, -1, -1).flatten(0, 2))
            bias_rows = bias.T.unsqueeze(1).expand(-1, self.num_strengths, -1)
            head.bias.copy_(bias_rows.flatten())


# the linear discriminant's within-class covariance is shrunk by this multiple of the identity
LDA_SHRINKAGE = 0.02


def _discriminant(means: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Per offset, ((1 + LDA_SHRINKAGE) I - U U^T)^(-1) m_c for class means m [K, V, D] and
    class frequencies p [K, V], U = [sqrt(p_c) m_c] (Woodbury, so [V, V] solves)."""
    scale = 1.0 + LDA_SHRINKAGE
    u = means * prior.sqrt().unsqueeze(-1)  # [K, V, D]
    gram = u @ u.transpose(1, 2)  # [K, V, V]
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
    inner = torch.linalg.solve(scale * eye - gram, u @ means.transpose(1, 2))  # [K, V, V]
    return (means + inner.transpose(1, 2) @ u) / scale


def _best_name(index: int, parameter: str) -> str:
    return f"best{index}_{parameter.replace('.', '_')}"


# added to every eigenvalue before whitening, as a fraction of the mean eigenvalue
WHITENING_SHRINKAGE = 1e-2


def whitening(
    cov: np.ndarray,
    shrinkage: float = WHITENING_SHRINKAGE,
    indicators: np.ndarray | None = None,
) -> torch.Tensor:
    """Shrunk ZCA whitening matrix (C + s I)^(-1/2), s = `shrinkage` x the mean eigenvalue;
    directions without variance (numerically zero) carry no information and are dropped.

    A linear probe on whitened features has the same hypothesis class as on raw ones, but the
    optimisation is well conditioned, so heads converge in few epochs even when units are
    strongly correlated (as recurrent states are). The shrinkage bounds how much a direction
    of tiny variance is amplified (a rare symbol's column, seen a few times in the fit block):
    unshrunk, such a direction is scaled up by 1/sqrt(its variance), and the few rows that
    differ there on test data cost a probe hundreds of bits.

    `indicators` (a boolean per column) marks one-hot indicator columns (a window of symbols
    the model declares as such): they are only centred (the identity; a column without
    variance is dropped), and the other columns are whitened among themselves.
    An indicator column is 0 or 1, so Adam's per-coordinate steps move a head's
    logits by about its learning rate on every row where it is set; whitened, a rare symbol's
    column is scaled up to 1/sqrt(floor) (~100x) and its rows' logits jump by that much per
    step, which is noise, not fitting. (The heads' L2 penalty weights those columns by their
    variance, so it stays the one whitened or standardised columns get: `FusedProbe`.)"""
    cov = np.asarray(cov, dtype=np.float64)
    if indicators is None or not np.any(indicators):
        return torch.as_tensor(_zca(cov, shrinkage), dtype=torch.float32)
    dense = ~np.asarray(indicators, dtype=bool)
    varies = np.diag(cov) > 1e-9 * max(np.diag(cov).max(), 0.0)
    out = np.diag(varies.astype(np.float64))  # indicators centred only; constant ones dropped
    out[np.ix_(dense, dense)] = _zca(cov[np.ix_(dense, dense)], shrinkage)
    return torch.as_tensor(out, dtype=torch.float32)


def _zca(cov: np.ndarray, shrinkage: float) -> np.ndarray:
    """(C + s I)^(-1/2) over C's directions with variance, zero on the others (see
    `whitening`)."""
    if cov.size == 0:
        return cov
    values, vectors = np.linalg.eigh(cov)
    top = max(values.max(), 0.0)
    keep = values > 1e-9 * top
    floor = shrinkage * values[keep].mean() if keep.any() else 0.0
    scale = np.where(keep, 1.0 / np.sqrt(np.where(keep, values, 0.0) + floor + (~keep)), 0.0)
    return (vectors * scale) @ vectors.T


def indicator_columns(net: nn.Module, view_dims: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Per view, which of its columns are one-hot indicators (centred, not whitened: see
    `whitening`): every column of the views the model declares so in its `indicator_views`
    (the n-gram window), none of any other view."""
    declared = getattr(net, "indicator_views", frozenset())
    return {v: np.full(d, v in declared) for v, d in view_dims.items()}


def probe_views(available: Mapping[str, int], requested: Sequence[str] | None) -> dict[str, int]:
    """The views to probe, in the model's order; unknown names, an empty list and a bare name
    where a list belongs are clear errors."""
    if requested is None:
        return dict(available)
    if isinstance(requested, str):
        raise ConfigError(
            f"probe.views={requested!r} is one name, not a list: write "
            f"probe.views=[{requested}] (or probe.views=null for every view)"
        )
    if not isinstance(requested, Sequence) or not requested:
        raise ConfigError(
            f"probe.views={requested!r}: give a non-empty list of view names, e.g. "
            f"probe.views=[{next(iter(available))}], or probe.views=null for every view; "
            f"available views: {list(available)}"
        )
    unknown = [v for v in requested if v not in available]
    if unknown:
        raise ConfigError(
            f"probe.views names {unknown}, which the model does not have; "
            f"available views: {list(available)}"
        )
    return {v: available[v] for v in available if v in requested}
