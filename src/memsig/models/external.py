"""Users' own models (`model=external`, `memsig.signature_of`): an adapter that gives any
`nn.Module` language model the network interface memsig's own models have (`view_dims`,
`views(tokens, state, only)`, `forward(tokens, state)`), so extraction, probes and reports
are shared.

The user's module runs its own forward. While it does, each of its `nn.LSTM` / `nn.GRU`
submodules runs one layer at a time with the fused kernel (a one-layer module that shares
the layer's weights): every layer's output sequence is kept, the state carried from the
previous chunk of the stream is fed in (the user's forward knows nothing of chunks), and an
LSTM's cell states are rebuilt exactly as for memsig's own models
(`recurrent.lstm_cell_states`). Submodules named in `hooks` add their outputs as views.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from memsig.models.recurrent import lstm_cell_states
from memsig.runtime.errors import ConfigError, MemsigError

RECURRENT = (nn.LSTM, nn.GRU)
CONTRACT = (
    "the module's forward(tokens[B, T]) returns logits [B, T, V] (or a tuple whose first item "
    "is them) and calls each of its nn.LSTM / nn.GRU submodules once (README: Probe your own "
    "model)"
)


def recurrent_modules(module: nn.Module) -> list[tuple[str, nn.RNNBase]]:
    """The `nn.LSTM` / `nn.GRU` submodules in registration order, refusing those whose state at
    step t is not a memory of steps <= t (bidirectional) or that memsig cannot read layer by
    layer (projections, a forward of their own)."""
    found = []
    for path, sub in module.named_modules():
        if not isinstance(sub, RECURRENT):
            continue
        base = nn.LSTM if isinstance(sub, nn.LSTM) else nn.GRU
        name = path or "the model itself"
        if sub.bidirectional:
            raise ConfigError(
                f"{name} is a bidirectional {base.__name__}: its state at step t has read the "
                "future, so it has no memory signature; probe a unidirectional model"
            )
        if getattr(sub, "proj_size", 0):
            raise ConfigError(f"{name}: LSTMs with proj_size > 0 are not supported")
        if type(sub).forward is not base.forward:
            raise ConfigError(
                f"{name} ({type(sub).__name__}) overrides {base.__name__}.forward: memsig runs "
                f"the layers with {base.__name__}'s own kernel and would not compute what it "
                f"does; name its output in model.hooks instead"
            )
        found.append((path, sub))
    return found


def layer_weights(rnn: nn.RNNBase, layer: int) -> list[Tensor]:
    """[weight_ih, weight_hh, bias_ih, bias_hh] of one layer (zero biases when it has none)."""
    weights = list(rnn.all_weights[layer])
    if not rnn.bias:
        zeros = weights[0].new_zeros(weights[0].shape[0])
        weights += [zeros, zeros]
    return weights


@dataclass
class LayerRecord:
    """One layer's input and output sequences ([B, T, *]) and initial state ([1, B, H])."""

    x: Tensor
    h: Tensor
    h0: Tensor
    c0: Tensor | None  # LSTM only


@dataclass
class RecurrentRecord:
    """What one recurrent module did in one forward pass."""

    layers: list[LayerRecord] = field(default_factory=list)
    final: object = None  # its final state: (h, c) for an LSTM, h for a GRU; [layers, B, H]


@contextmanager
def layer_by_layer(rnn: nn.RNNBase, carried, record: RecurrentRecord) -> Iterator[None]:
    """While open, `rnn` runs one layer at a time (same outputs as its own forward, in eval
    mode), starts from `carried` (the state at the end of the previous chunk) when there is
    one, and records every layer in `record`."""
    lstm = isinstance(rnn, nn.LSTM)
    run = torch.lstm if lstm else torch.gru

    def forward(input, hx=None):
        if isinstance(input, PackedSequence):
            raise MemsigError("memsig reads unpacked sequences only: " + CONTRACT)
        if record.final is not None:
            raise MemsigError(f"a recurrent module was called twice in one forward: {CONTRACT}")
        x = input if rnn.batch_first else input.transpose(0, 1)
        if x.dim() != 3:
            raise MemsigError(f"a recurrent module got an unbatched input: {CONTRACT}")
        start = carried if carried is not None else hx
        if start is None:
            zeros = x.new_zeros(rnn.num_layers, x.shape[0], rnn.hidden_size)
            start = (zeros, zeros) if lstm else zeros
        h0, c0 = start if lstm else (start, None)
        finals = []
        for layer in range(rnn.num_layers):
            state = h0[layer : layer + 1]
            initial = (state, c0[layer : layer + 1]) if lstm else state
            # the fused kernel on this layer alone, from the module's own weights
            y, *last = run(x, initial, rnn.all_weights[layer], rnn.bias, 1, 0.0, False, False, True)
            last = tuple(last) if lstm else last[0]
            record.layers.append(LayerRecord(x, y, state, c0[layer : layer + 1] if lstm else None))
            finals.append(last)
            x = y
        if lstm:
            record.final = tuple(torch.cat(part) for part in zip(*finals, strict=True))
        else:
            record.final = torch.cat(finals)
        return (x if rnn.batch_first else x.transpose(0, 1)), record.final

    rnn.forward = forward
    try:
        yield
    finally:
        del rnn.forward


class ExternalNetwork(nn.Module):
    """A user's language model read as memsig reads its own.

    Views: `layer{L}.h` (and `layer{L}.c` for LSTMs) for every layer of every `nn.LSTM` /
    `nn.GRU` submodule, counted from 1 in registration order; `logits` (log-softmax); then
    one view per `hooks` entry ({view name: submodule path}), the submodule's output (the
    first item of a tuple), which must be [B, T, D]. The state carried across chunks is the
    final state of every recurrent submodule; it replaces whatever initial state the
    module's forward passes them.
    """

    def __init__(
        self, module: nn.Module, vocab_size: int, hooks: Mapping[str, str] | None = None
    ) -> None:
        super().__init__()
        self.module = module
        self.vocab_size = vocab_size
        self.hooks = dict(hooks or {})
        self.recurrent_paths = [path for path, _ in recurrent_modules(module)]
        for name, path in self.hooks.items():
            try:
                module.get_submodule(path)
            except AttributeError:
                names = [p for p, _ in module.named_modules() if p]
                raise ConfigError(
                    f"model.hooks.{name}={path}: the model has no such submodule (it has: "
                    f"{', '.join(names[:20])})"
                ) from None
        self._hook_dims: dict[str, int] | None = None

    def _recurrent(self) -> list[nn.RNNBase]:
        return [self.module.get_submodule(path) for path in self.recurrent_paths]

    @property
    def view_dims(self) -> dict[str, int]:
        """Name and width of every view returned by :meth:`views`, in order."""
        dims, number = {}, 0
        for rnn in self._recurrent():
            for _ in range(rnn.num_layers):
                number += 1
                dims[f"layer{number}.h"] = rnn.hidden_size
                if isinstance(rnn, nn.LSTM):
                    dims[f"layer{number}.c"] = rnn.hidden_size
        dims["logits"] = self.vocab_size
        clash = sorted(set(dims) & set(self.hooks))
        if clash:
            raise ConfigError(f"model.hooks names {clash} clash with the model's own views")
        if self._hook_dims is None and not self.hooks:
            self._hook_dims = {}
        if self._hook_dims is None:  # a hooked output's width shows when the model runs
            device = next(self.parameters()).device
            with torch.no_grad():
                _, _, captured, _ = self._run(torch.zeros(1, 2, dtype=torch.long, device=device))
            self._hook_dims = {name: value.shape[-1] for name, value in captured.items()}
        return {**dims, **self._hook_dims}

    def _run(
        self, tokens: Tensor, state: list | None = None
    ) -> tuple[Tensor, list[RecurrentRecord], dict[str, Tensor], list]:
        """Run the module once: logits, what each recurrent module did, the hooked outputs,
        the final state."""
        rnns = self._recurrent()
        records = [RecurrentRecord() for _ in rnns]
        captured: dict[str, Tensor] = {}
        with ExitStack() as stack:
            for i, rnn in enumerate(rnns):
                carried = None if state is None else state[i]
                stack.enter_context(layer_by_layer(rnn, carried, records[i]))
            for name, path in self.hooks.items():
                hook = self.module.get_submodule(path).register_forward_hook(
                    lambda _m, _i, out, name=name: captured.__setitem__(name, _first(out))
                )
                stack.callback(hook.remove)
            logits = _first(self.module(tokens))
        batch, steps = tokens.shape
        if logits.shape != (batch, steps, self.vocab_size):
            raise MemsigError(
                f"the model returned logits of shape {tuple(logits.shape)} for tokens "
                f"{(batch, steps)} and a vocabulary of {self.vocab_size}: {CONTRACT}"
            )
        for name, value in captured.items():
            if value.shape[:2] != (batch, steps) or value.dim() != 3:
                raise MemsigError(
                    f"model.hooks.{name}={self.hooks[name]} returned shape {tuple(value.shape)} "
                    f"for tokens {(batch, steps)}: a view must be [B, T, D] (batch first)"
                )
        for path, record in zip(self.recurrent_paths, records, strict=True):
            if record.final is None:
                raise MemsigError(f"{path or 'the model'} was not called: {CONTRACT}")
        return logits, records, captured, [record.final for record in records]

    def forward(self, tokens: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        """Unnormalised [B, T, V] logits and the final state (to carry across chunks)."""
        logits, _, _, final = self._run(tokens, state)
        return logits, final

    def views(
        self, tokens: Tensor, state: list | None = None, only: Collection[str] | None = None
    ) -> tuple[dict[str, Tensor], list]:
        """Every view of :attr:`view_dims` as [B, T, D] plus the final state; LSTM cell states
        not named in `only` are not rebuilt."""
        logits, records, captured, final = self._run(tokens, state)
        out: dict[str, Tensor] = {}
        number = 0
        for rnn, record in zip(self._recurrent(), records, strict=True):
            for layer, step in enumerate(record.layers):
                number += 1
                out[f"layer{number}.h"] = step.h
                name = f"layer{number}.c"
                if step.c0 is not None and (only is None or name in only):
                    weights = layer_weights(rnn, layer)
                    out[name] = lstm_cell_states(step.x, step.h, step.h0, step.c0, weights)
        out["logits"] = F.log_softmax(logits, dim=-1)
        out.update(captured)
        return out, final


def _first(output):
    """A module's output, or the first item of the tuple it returns."""
    return output[0] if isinstance(output, tuple | list) else output


def external_network(
    vocab_size: int,
    target: str,
    kwargs: Mapping | None = None,
    hooks: Mapping[str, str] | None = None,
) -> ExternalNetwork:
    """`model=external`'s network: the class `target` built with `kwargs` (its own initial
    weights; the checkpoint's are loaded over them), read through ExternalNetwork."""
    from hydra.utils import get_class

    try:
        cls = get_class(target)
    except Exception as err:  # hydra wraps import errors of every kind
        raise ConfigError(
            f"model.target={target}: cannot import it ({err}); give the import path of your "
            "nn.Module class (package.module.Class) and put its folder on PYTHONPATH"
        ) from None
    try:
        module = cls(**dict(kwargs or {}))
    except TypeError as err:
        raise ConfigError(f"model.kwargs do not fit {target}: {err}") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"model.target={target} is not an nn.Module class")
    return ExternalNetwork(module, vocab_size, hooks)


def read_vocab(path: str | Path) -> list[str]:
    """`model.vocab`: a JSON list of distinct strings, index = the model's input id."""
    try:
        vocab = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"model.vocab={path}: cannot read a JSON list from it ({err})") from None
    if not isinstance(vocab, list) or not all(isinstance(s, str) for s in vocab):
        raise ConfigError(f"model.vocab={path}: must hold a JSON list of strings (symbols)")
    if len(set(vocab)) != len(vocab):
        raise ConfigError(f"model.vocab={path}: lists a symbol twice")
    return vocab


def load_weights(net: ExternalNetwork, path: str | Path) -> None:
    """Load `model.weights` (a state_dict file, read with weights_only=True) into the module."""
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(
            f"model.weights={path}: cannot load a state_dict from it safely ({err}); save it "
            "with torch.save(model.state_dict(), path)"
        ) from None
    if not isinstance(weights, Mapping):
        kind = type(weights).__name__
        raise ConfigError(f"model.weights={path} holds a {kind}, not a state_dict")
    try:
        net.module.load_state_dict(weights)
    except RuntimeError as err:
        raise ConfigError(f"model.weights={path} do not fit model.target: {err}") from None


def is_external(model_cfg: Mapping) -> bool:
    """Whether a model config is `model=external`'s (or one made from it)."""
    net = model_cfg.get("net") or {}
    return net.get("_target_") == f"{__name__}.{external_network.__name__}"
