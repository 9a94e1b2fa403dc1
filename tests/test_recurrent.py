"""Tests for memsig.models.recurrent against step-by-step nn.LSTMCell / nn.GRUCell references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from memsig.models.recurrent import StackedRNN, detach_state, linear_recurrence_scan

B, T, V, H = 3, 37, 7, 16


def _loop_recurrence(a, b, initial):
    c, out = initial, []
    for t in range(a.shape[1]):
        c = a[:, t] * c + b[:, t]
        out.append(c)
    return torch.stack(out, dim=1)


def _random_state(model, gen_seed=0):
    g = torch.Generator().manual_seed(gen_seed)
    shape = (1, B, model.hidden)
    if model.cell == "lstm":
        return [
            (torch.randn(shape, generator=g), torch.randn(shape, generator=g))
            for _ in range(model.layers)
        ]
    return [torch.randn(shape, generator=g) for _ in range(model.layers)]


def _cell_reference(model, tokens, state):
    """Per-layer h (and c) sequences and final state from an explicit per-step cell loop."""
    cell_cls = nn.LSTMCell if model.cell == "lstm" else nn.GRUCell
    x = model.embedding(tokens)
    views, final = {}, []
    for i, rnn in enumerate(model.rnns, start=1):
        cell = cell_cls(rnn.input_size, rnn.hidden_size)
        cell.load_state_dict(
            {
                "weight_ih": rnn.weight_ih_l0,
                "weight_hh": rnn.weight_hh_l0,
                "bias_ih": rnn.bias_ih_l0,
                "bias_hh": rnn.bias_hh_l0,
            }
        )
        hs, cs = [], []
        if model.cell == "lstm":
            h, c = state[i - 1][0][0], state[i - 1][1][0]
            for t in range(tokens.shape[1]):
                h, c = cell(x[:, t], (h, c))
                hs.append(h)
                cs.append(c)
            views[f"layer{i}.c"] = torch.stack(cs, dim=1)
            final.append((h[None], c[None]))
        else:
            h = state[i - 1][0]
            for t in range(tokens.shape[1]):
                h = cell(x[:, t], h)
                hs.append(h)
            final.append(h[None])
        views[f"layer{i}.h"] = x = torch.stack(hs, dim=1)
    return views, final


def _tokens(seed=1, length=T):
    return torch.randint(0, V, (B, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 8, 13, 37, 64])
def test_scan_matches_loop(steps):
    g = torch.Generator().manual_seed(steps)
    a = torch.rand(2, steps, 4, generator=g, dtype=torch.float64) * 3 - 1.5  # any sign, |a| > 1 too
    b = torch.randn(2, steps, 4, generator=g, dtype=torch.float64)
    initial = torch.randn(2, 4, generator=g, dtype=torch.float64)
    got = linear_recurrence_scan(a, b, initial)
    assert got.shape == (2, steps, 4)
    torch.testing.assert_close(got, _loop_recurrence(a, b, initial), rtol=1e-10, atol=1e-10)


def test_scan_zero_initial_and_inputs_untouched():
    a, b = torch.rand(1, 10, 3), torch.randn(1, 10, 3)
    a0, b0 = a.clone(), b.clone()
    got = linear_recurrence_scan(a, b, torch.zeros(1, 3))
    torch.testing.assert_close(got, _loop_recurrence(a0, b0, torch.zeros(1, 3)))
    assert torch.equal(a, a0) and torch.equal(b, b0)


def test_lstm_views_match_lstmcell_loop():
    torch.manual_seed(0)
    model = StackedRNN(V, "lstm", layers=2, hidden=H, embed=5).eval()
    tokens, state = _tokens(), _random_state(model)
    with torch.no_grad():
        views, final = model.views(tokens, state)
        ref_views, ref_final = _cell_reference(model, tokens, state)
        logits, fwd_final = model(tokens, state)
    for name in ("layer1.h", "layer1.c", "layer2.h", "layer2.c"):
        assert views[name].shape == (B, T, H)
        torch.testing.assert_close(views[name], ref_views[name], atol=1e-5, rtol=0)
    for (h, c), (rh, rc), (fh, fc) in zip(final, ref_final, fwd_final, strict=True):
        torch.testing.assert_close(h, rh, atol=1e-5, rtol=0)
        torch.testing.assert_close(c, rc, atol=1e-5, rtol=0)
        assert torch.equal(h, fh) and torch.equal(c, fc)
    torch.testing.assert_close(views["logits"], F.log_softmax(logits, dim=-1))
    # The last rebuilt cell state agrees with the c_T the fused kernel returned.
    for i, (_, c) in enumerate(final, start=1):
        torch.testing.assert_close(views[f"layer{i}.c"][:, -1], c[0], atol=1e-5, rtol=0)


def test_lstm_views_without_state_match_zero_state():
    torch.manual_seed(0)
    model = StackedRNN(V, "lstm", layers=2, hidden=H).eval()
    tokens = _tokens()
    zeros = [(torch.zeros(1, B, H), torch.zeros(1, B, H)) for _ in range(2)]
    with torch.no_grad():
        views, _ = model.views(tokens)
        ref_views, _ = _cell_reference(model, tokens, zeros)
    torch.testing.assert_close(views["layer2.c"], ref_views["layer2.c"], atol=1e-5, rtol=0)


def test_long_sequence_final_cell_matches_fused_kernel_with_dropout():
    """In train mode the rebuilt c must use the same dropped-out inputs the layer saw."""
    torch.manual_seed(0)
    model = StackedRNN(V, "lstm", layers=3, hidden=H, dropout=0.3).train()
    with torch.no_grad():
        views, final = model.views(_tokens(length=300))
    for i, (_, c) in enumerate(final, start=1):
        torch.testing.assert_close(views[f"layer{i}.c"][:, -1], c[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_carrying_state_equals_whole_sequence(cell):
    torch.manual_seed(0)
    model = StackedRNN(V, cell, layers=2, hidden=H).eval()
    tokens, state = _tokens(), _random_state(model)
    with torch.no_grad():
        whole, whole_final = model.views(tokens, state)
        first, mid = model.views(tokens[:, :20], state)
        second, split_final = model.views(tokens[:, 20:], mid)
    for name in model.view_dims:
        joined = torch.cat([first[name], second[name]], dim=1)
        torch.testing.assert_close(joined, whole[name], atol=1e-5, rtol=0)
    flat = [t for s in whole_final for t in (s if isinstance(s, tuple) else (s,))]
    flat_split = [t for s in split_final for t in (s if isinstance(s, tuple) else (s,))]
    for a, b in zip(flat, flat_split, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_gru_views_match_grucell_loop():
    torch.manual_seed(0)
    model = StackedRNN(V, "gru", layers=2, hidden=H).eval()
    tokens, state = _tokens(), _random_state(model)
    with torch.no_grad():
        views, final = model.views(tokens, state)
        ref_views, ref_final = _cell_reference(model, tokens, state)
    assert list(views) == ["layer1.h", "layer2.h", "logits"]
    for name in ("layer1.h", "layer2.h"):
        torch.testing.assert_close(views[name], ref_views[name], atol=1e-5, rtol=0)
    for h, rh in zip(final, ref_final, strict=True):
        torch.testing.assert_close(h, rh, atol=1e-5, rtol=0)


def test_view_dims():
    lstm = StackedRNN(11, "lstm", layers=3, hidden=8)
    assert list(lstm.view_dims.items()) == [
        ("layer1.h", 8),
        ("layer1.c", 8),
        ("layer2.h", 8),
        ("layer2.c", 8),
        ("layer3.h", 8),
        ("layer3.c", 8),
        ("logits", 11),
    ]
    gru = StackedRNN(5, "gru", layers=1, hidden=4)
    assert list(gru.view_dims.items()) == [("layer1.h", 4), ("logits", 5)]
    assert (lstm.cell, lstm.layers, lstm.hidden, lstm.vocab_size) == ("lstm", 3, 8, 11)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_views_shapes_match_view_dims(cell):
    model = StackedRNN(V, cell, layers=2, hidden=H).eval()
    with torch.no_grad():
        views, _ = model.views(_tokens(length=9))
    assert list(views) == list(model.view_dims)
    for name, dim in model.view_dims.items():
        assert views[name].shape == (B, 9, dim)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_forward_shapes_and_gradients(cell):
    torch.manual_seed(0)
    model = StackedRNN(V, cell, layers=2, hidden=H, embed=6)
    tokens = _tokens(length=11)
    logits, state = model(tokens)
    assert logits.shape == (B, 11, V)
    assert len(state) == 2
    for s in state:
        parts = s if cell == "lstm" else (s,)
        assert isinstance(s, tuple) == (cell == "lstm")
        assert all(p.shape == (1, B, H) for p in parts)
    F.cross_entropy(logits.reshape(-1, V), tokens.reshape(-1)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_detach_state():
    h = torch.randn(1, 2, 3, requires_grad=True) * 2
    c = torch.randn(1, 2, 3, requires_grad=True) * 2
    assert detach_state(None) is None
    lstm = detach_state([(h, c)])
    assert isinstance(lstm[0], tuple) and not any(t.requires_grad for t in lstm[0])
    assert torch.equal(lstm[0][0], h)
    gru = detach_state([h, c])
    assert not any(t.requires_grad for t in gru) and torch.equal(gru[1], c)


def test_dropout_only_in_train_mode():
    torch.manual_seed(0)
    model = StackedRNN(V, "lstm", layers=2, hidden=H, dropout=0.5)
    tokens = _tokens()
    with torch.no_grad():
        model.train()
        a, _ = model(tokens)
        b, _ = model(tokens)
        model.eval()
        c, _ = model(tokens)
        d, _ = model(tokens)
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, c)
    assert torch.equal(c, d)
    no_dropout = StackedRNN(V, "lstm", layers=2, hidden=H)
    no_dropout.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(no_dropout.eval()(tokens)[0], c)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cell": "rnn"}, "cell.*'rnn'"),
        ({"layers": 0}, "layers.*0"),
        ({"hidden": -3}, "hidden.*-3"),
        ({"embed": 0}, "embed.*0"),
        ({"vocab_size": 1}, "vocab_size.*1"),
        ({"dropout": -0.1}, r"dropout.*-0\.1"),
        ({"dropout": 1.0}, r"dropout.*1\.0"),
    ],
)
def test_invalid_arguments(kwargs, match):
    args = {"vocab_size": V, **kwargs}
    with pytest.raises(ValueError, match=match):
        StackedRNN(**args)


@pytest.mark.slow
def test_compile_warns_where_torch_compile_leaves_the_network_uncompiled(caplog):
    """The warning's claim, checked against the installed PyTorch: dynamo captures no graph
    from a stacked nn.LSTM's forward, but the factorized LSTM's forward is one whole graph."""
    from functools import partial

    from memsig.models.char_lm import CharLM
    from memsig.models.factorized import FactorizedLSTM

    tokens = torch.randint(0, V, (B, T))
    lstm = StackedRNN(V, "lstm", 2, H, 8, 0.0)
    flstm = FactorizedLSTM(V, 2, H, 8, rank=4)
    torch._dynamo.reset()
    assert torch._dynamo.explain(lstm.forward)(tokens, None).graph_count == 0
    assert torch._dynamo.explain(flstm.forward)(tokens, None).graph_count == 1
    torch._dynamo.reset()
    optimizer = partial(torch.optim.Adam, lr=1e-3)
    CharLM(flstm, optimizer, compile=True)
    assert "compile=true" not in caplog.text
    CharLM(lstm, optimizer, compile=True)
    assert "runs this network's forward uncompiled" in caplog.text
