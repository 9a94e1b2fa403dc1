"""Factorized LSTM: each layer's recurrent kernel is ``W_hh = W_0 + sum_i d_i U_i V_i^T``.

Each basis i reads the r-dimensional signal ``V_i^T h_t`` from the state and writes
``d_i U_i V_i^T h_t`` into all four gates, so the bases are separate channels through which
history can flow, and their signatures show what each one carries. The kernel is composed
once per forward call and handed to the fused LSTM op, so training and state extraction
run at the speed of ``nn.LSTM`` and every view of :class:`StackedRNN` (``h``, the derived
``c``) comes for free.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Collection, Sequence
from functools import partial

import torch
from torch import Tensor, nn

from memsig.models.recurrent import StackedRNN, State
from memsig.runtime.errors import ConfigError


class FactorizedLSTMLayer(nn.Module):
    """One LSTM layer with a factorized recurrent kernel, called like a one-layer ``nn.LSTM``."""

    def __init__(
        self,
        input_size: int,
        hidden: int,
        bases: int,
        rank: int,
        full_rank: bool,
        mixing: Sequence[float],
        learn_mixing: bool,
    ) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(hidden)  # nn.LSTM's initialisation

        def uniform(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        self.weight_ih = uniform(4 * hidden, input_size)
        self.bias_ih = uniform(4 * hidden)
        self.bias_hh = uniform(4 * hidden)
        self.weight_hh = uniform(4 * hidden, hidden) if full_rank else None
        # Every factor entry has std s with r * s^4 = var(uniform) / parts, so the composed
        # kernel starts with nn.LSTM's scale whatever the number of bases and their rank.
        parts = bases + int(full_rank)
        std = (bound**2 / 3 / parts / rank) ** 0.25
        self.U = nn.Parameter(torch.randn(bases, 4 * hidden, rank) * std)
        self.V = nn.Parameter(torch.randn(bases, hidden, rank) * std)
        d = torch.tensor([float(v) for v in mixing])
        if learn_mixing:
            self.d = nn.Parameter(d)
        else:
            self.register_buffer("d", d)
        # Which bases take part; ablations switch all but one off (not saved in checkpoints).
        self.register_buffer("active", torch.ones(bases), persistent=False)

    def recurrent_kernel(self) -> Tensor:
        """The composed ``[4H, H]`` kernel ``W_0 + sum_i d_i U_i V_i^T`` (active bases only)."""
        low_rank = torch.einsum("n,ngr,nhr->gh", self.d * self.active, self.U, self.V)
        return low_rank if self.weight_hh is None else self.weight_hh + low_rank

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """``nn.LSTM.all_weights`` layout: ``[[weight_ih, weight_hh, bias_ih, bias_hh]]``."""
        return [[self.weight_ih, self.recurrent_kernel(), self.bias_ih, self.bias_hh]]

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``[B, T, in]`` inputs to ``[B, T, H]`` outputs, final ``(h, c)`` each ``[1, B, H]``."""
        if state is None:
            zeros = x.new_zeros(1, x.shape[0], self.bias_hh.shape[0] // 4)
            state = (zeros, zeros)
        out, h, c = torch.lstm(
            x,
            state,
            self.all_weights[0],
            True,  # has_biases
            1,  # num_layers
            0.0,  # dropout
            self.training,
            False,  # bidirectional
            True,  # batch_first
        )
        return out, (h, c)


class FactorizedLSTM(StackedRNN):
    """:class:`StackedRNN` with factorized LSTM layers, plus the views ``layer{L}.basis{i}``."""

    def __init__(
        self,
        vocab_size: int,
        layers: int = 2,
        hidden: int = 128,
        embed: int = 32,
        dropout: float = 0.0,
        bases: int = 4,
        rank: int = 16,
        full_rank: bool = True,
        mixing: float | Sequence[float] = 1.0,
        learn_mixing: bool = True,
    ) -> None:
        mixing = _mixing_values(mixing, bases)
        if bases < 0 or (bases == 0 and not full_rank):
            raise ValueError(
                f"bases={bases} with full_rank={full_rank} leaves no recurrent kernel: "
                "set model.bases >= 1, or model.full_rank=true for a plain LSTM kernel"
            )
        if not 1 <= rank <= hidden:
            raise ValueError(
                f"rank={rank} must be in 1..hidden={hidden} (V_i maps the {hidden}-dim state "
                f"to r dims): set model.rank to at most {hidden}, or raise model.hidden"
            )
        layer = partial(
            FactorizedLSTMLayer,
            hidden=hidden,
            bases=bases,
            rank=rank,
            full_rank=full_rank,
            mixing=mixing,
            learn_mixing=learn_mixing,
        )
        super().__init__(vocab_size, "lstm", layers, hidden, embed, dropout, layer_factory=layer)
        self.bases = bases
        self.rank = rank

    @property
    def view_dims(self) -> dict[str, int]:
        """The LSTM views, each layer's ``basis1..basis{bases}`` after its ``h`` and ``c``."""
        dims = {}
        for name, dim in super().view_dims.items():
            dims[name] = dim
            if name.endswith(".c"):
                layer = name.removesuffix(".c")
                dims.update({f"{layer}.basis{i}": self.rank for i in range(1, self.bases + 1)})
        return dims

    def views(
        self, tokens: Tensor, state: State | None = None, only: Collection[str] | None = None
    ) -> tuple[dict[str, Tensor], State]:
        """The LSTM views plus ``layer{L}.basis{i}[:, t] = V_i^T h_t`` (what basis i reads)."""
        out, final = super().views(tokens, state, only)
        for layer, rnn in enumerate(self.rnns, start=1):
            reads = torch.einsum("bth,nhr->nbtr", out[f"layer{layer}.h"], rnn.V)
            out.update({f"layer{layer}.basis{i}": r for i, r in enumerate(reads, start=1)})
        return out, final

    def only_basis(self, basis: int) -> FactorizedLSTM:
        """A copy sharing every weight in which each layer uses basis ``basis`` (1-based) alone,
        plus ``W_0`` when present."""
        ablated = copy.deepcopy(self, memo={id(t): t for t in self.parameters()})
        for rnn in ablated.rnns:
            rnn.active = torch.zeros_like(rnn.active)
            rnn.active[basis - 1] = 1.0
        return ablated


class BasisAblations(nn.Module):
    """A factorized LSTM's views plus ``layer{L}.h@basis{i}``: the state ``h`` of layer L when
    the model runs with basis i alone (plus ``W_0``), i.e. the history that survives through
    that basis. Every ablated model carries its own state across chunks."""

    def __init__(self, net: FactorizedLSTM) -> None:
        super().__init__()
        self.net = net
        self.ablated = nn.ModuleList(net.only_basis(i) for i in range(1, net.bases + 1))

    @property
    def view_dims(self) -> dict[str, int]:
        dims = dict(self.net.view_dims)
        for i in range(1, self.net.bases + 1):
            dims.update(
                {f"layer{L}.h@basis{i}": self.net.hidden for L in range(1, self.net.layers + 1)}
            )
        return dims

    def views(
        self,
        tokens: Tensor,
        state: tuple[State, list[State]] | None = None,
        only: Collection[str] | None = None,
    ) -> tuple[dict[str, Tensor], tuple[State, list[State]]]:
        main, ablated = state if state is not None else (None, [None] * len(self.ablated))
        out, main = self.net.views(tokens, main, only)
        finals = []
        for i, (model, carried) in enumerate(zip(self.ablated, ablated, strict=True), start=1):
            hidden, final = model.hidden_states(tokens, carried)
            out.update({f"layer{n}.h@basis{i}": h for n, h in enumerate(hidden, start=1)})
            finals.append(final)
        return out, (main, finals)


def with_basis_ablations(net: nn.Module, ablate: bool) -> nn.Module:
    """`net`, wrapped in :class:`BasisAblations` when `probe.ablate_bases` asks for it."""
    if not ablate:
        return net
    if not isinstance(net, FactorizedLSTM) or net.bases == 0:
        raise ConfigError(
            "probe.ablate_bases=true needs a model with kernel bases (model=flstm with "
            "model.bases >= 1): use model=flstm, or set probe.ablate_bases=false"
        )
    return BasisAblations(net)


def _mixing_values(mixing: float | Sequence[float], bases: int) -> list[float]:
    """`model.mixing` as one value per basis (a single number applies to every basis)."""
    if isinstance(mixing, int | float):
        return [float(mixing)] * max(bases, 0)
    values = [float(v) for v in mixing]
    if len(values) != bases:
        raise ValueError(
            f"mixing={values} has {len(values)} values for bases={bases}: give one number "
            f"for all bases or a list of {bases} (model.mixing)"
        )
    return values
