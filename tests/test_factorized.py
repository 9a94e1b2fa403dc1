"""The factorized LSTM: fused path vs a step-by-step cell, basis views, ablations, divergence."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from conftest import compose_config
from memsig.models.checkpoint import build_network
from memsig.models.factorized import BasisAblations, FactorizedLSTM, with_basis_ablations
from memsig.models.recurrent import StackedRNN
from memsig.pipeline.plan import prepare
from memsig.pipeline.run import run
from memsig.reports.bases import KEY, basis_divergence, curve_divergence
from memsig.runtime.errors import ConfigError
from memsig.signature.record import Signature, ViewScores

VOCAB = 7


def tiny_net(**kwargs) -> FactorizedLSTM:
    torch.manual_seed(0)
    sizes = {"layers": 2, "hidden": 12, "embed": 5, "bases": 3, "rank": 2}
    return FactorizedLSTM(VOCAB, **{**sizes, **kwargs})


def reference_layer(layer, x, h, c):
    """Step-by-step LSTM cell from the layer's parameters, kernel summed basis by basis."""
    kernel = sum(
        layer.d[i] * layer.U[i] @ layer.V[i].T for i in range(len(layer.d)) if layer.active[i]
    )
    if layer.weight_hh is not None:
        kernel = kernel + layer.weight_hh
    outputs, cells = [], []
    for t in range(x.shape[1]):
        gates = x[:, t] @ layer.weight_ih.T + layer.bias_ih + h @ kernel.T + layer.bias_hh
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
        cells.append(c)
    return torch.stack(outputs, 1), torch.stack(cells, 1)


def reference_views(net: FactorizedLSTM, tokens, state=None):
    x = net.embedding(tokens)
    out = {}
    for n, layer in enumerate(net.rnns, start=1):
        if state is None:
            h0 = c0 = x.new_zeros(x.shape[0], net.hidden)
        else:
            h0, c0 = (s[0] for s in state[n - 1])
        out[f"layer{n}.h"], out[f"layer{n}.c"] = reference_layer(layer, x, h0, c0)
        x = out[f"layer{n}.h"]
    out["logits"] = torch.log_softmax(net.head(x), -1)
    return out


@pytest.mark.parametrize("full_rank", [True, False])
def test_fused_path_matches_a_step_by_step_cell(full_rank):
    net = tiny_net(full_rank=full_rank, mixing=[0.5, -1.0, 2.0]).eval()
    tokens = torch.randint(0, VOCAB, (3, 9))
    state = [(torch.randn(1, 3, 12) * 0.5, torch.randn(1, 3, 12)) for _ in range(2)]
    with torch.no_grad():
        got, final = net.views(tokens, state)
        want = reference_views(net, tokens, state)
        logits, forward_final = net(tokens, state)
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-5, msg=name)
    torch.testing.assert_close(torch.log_softmax(logits, -1), want["logits"])
    for n, ((h, c), (fh, fc)) in enumerate(zip(final, forward_final, strict=True), start=1):
        torch.testing.assert_close(h[0], want[f"layer{n}.h"][:, -1])
        torch.testing.assert_close(c[0], want[f"layer{n}.c"][:, -1])
        torch.testing.assert_close((fh, fc), (h, c))


def test_basis_views_are_what_each_basis_reads():
    net = tiny_net().eval()
    with torch.no_grad():
        views, _ = net.views(torch.randint(0, VOCAB, (2, 5)))
    assert set(views) == set(net.view_dims)
    for n, layer in enumerate(net.rnns, start=1):
        for i in range(3):
            want = views[f"layer{n}.h"] @ layer.V[i]
            torch.testing.assert_close(views[f"layer{n}.basis{i + 1}"], want)
    assert net.view_dims["layer2.basis3"] == 2


def test_gradients_reach_every_factor():
    net = tiny_net(full_rank=True)
    logits, _ = net(torch.randint(0, VOCAB, (2, 6)))
    logits.square().mean().backward()
    for layer in net.rnns:
        for name in ("U", "V", "d", "weight_hh"):
            grad = getattr(layer, name).grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_one_basis_with_zero_mixing_is_an_lstm():
    net = tiny_net(bases=1, full_rank=True, mixing=0.0, learn_mixing=False).eval()
    lstm = StackedRNN(VOCAB, "lstm", layers=2, hidden=12, embed=5).eval()
    with torch.no_grad():
        lstm.embedding.weight.copy_(net.embedding.weight)
        lstm.head.load_state_dict(net.head.state_dict())
        for ours, theirs in zip(net.rnns, lstm.rnns, strict=True):
            for mine, name in (
                ("weight_ih", "weight_ih_l0"),
                ("weight_hh", "weight_hh_l0"),
                ("bias_ih", "bias_ih_l0"),
                ("bias_hh", "bias_hh_l0"),
            ):
                getattr(theirs, name).copy_(getattr(ours, mine))
    tokens = torch.randint(0, VOCAB, (3, 11))
    with torch.no_grad():
        ours, our_state = net.views(tokens)
        theirs, their_state = lstm.views(tokens)
        assert torch.equal(net(tokens)[0], lstm(tokens)[0])
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), name
    for mine, other in zip(our_state, their_state, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(mine, other, strict=True))
    assert "d" not in dict(net.named_parameters()) and "rnns.0.d" in net.state_dict()


def test_ablations_run_one_basis_and_carry_their_state():
    net = tiny_net(full_rank=False, mixing=[0.5, -1.0, 2.0]).eval()
    ablations = BasisAblations(net)
    assert sum(p.numel() for p in ablations.parameters()) == sum(
        p.numel() for p in net.parameters()
    )
    tokens = torch.randint(0, VOCAB, (2, 10))
    with torch.no_grad():
        whole, _ = ablations.views(tokens)
        first, state = ablations.views(tokens[:, :4])
        second, _ = ablations.views(tokens[:, 4:], state)
        only2 = tiny_net(full_rank=False, mixing=[0.0, -1.0, 0.0]).eval()
        want = reference_views(only2, tokens)
    assert set(whole) == set(ablations.view_dims)
    torch.testing.assert_close(whole["layer2.h@basis2"], want["layer2.h"])
    for name, value in whole.items():
        torch.testing.assert_close(torch.cat([first[name], second[name]], 1), value, msg=name)
    assert all(layer.active.tolist() == [1.0, 1.0, 1.0] for layer in net.rnns)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"rank": 13}, ["rank=13", "model.rank"]),
        ({"bases": 0, "full_rank": False}, ["bases=0", "model.bases", "model.full_rank"]),
        ({"mixing": [1.0, 2.0]}, ["mixing", "model.mixing"]),
    ],
)
def test_bad_model_settings_are_config_errors(overrides, words):
    net_cfg = {
        "_target_": "memsig.models.factorized.FactorizedLSTM",
        "_partial_": True,
        "layers": 1,
        "hidden": 12,
        "embed": 4,
        "bases": 3,
        "rank": 2,
        **overrides,
    }
    with pytest.raises(ConfigError) as err:
        build_network({"net": net_cfg}, VOCAB)
    assert all(word in str(err.value) for word in words), str(err.value)


FLSTM = ["model=flstm", "model.bases=2", "model.rank=4", "model.layers=1", "model.hidden=32"]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["probe.views=[layer1.basis3]"], ["layer1.basis3", "layer1.basis2"]),
        (["probe.views=[layer1.h@basis3]", "probe.ablate_bases=true"], ["layer1.h@basis3"]),
        (["model.rank=64"], ["model.rank", "64"]),
    ],
)
def test_bad_views_and_ranks_fail_before_training(tmp_path, overrides, words):
    cfg = compose_config(tmp_path / "run", [*FLSTM, *overrides])
    with pytest.raises(ConfigError) as err:
        prepare(cfg)
    assert all(word in str(err.value) for word in words), str(err.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_ablating_a_model_without_bases_is_a_config_error():
    with pytest.raises(ConfigError, match="probe.ablate_bases"):
        with_basis_ablations(StackedRNN(VOCAB, "lstm", layers=1, hidden=8, embed=4), True)


def signature_with(curves: dict[str, list[float]]) -> Signature:
    offsets = [-1, 0, 1, 2]
    prior = [2.0, 2.0, 2.0, 2.0]
    return Signature(
        model={"name": "flstm"},
        data={"name": "toy"},
        probe={"kind": "linear"},
        offsets=offsets,
        baseline={"majority_accuracy": [0.3] * 4, "prior_entropy_bits": prior},
        views={
            v: ViewScores.from_scores(4, offsets, [0.5] * 4, [2.0 - 2 * r for r in c], prior)
            for v, c in curves.items()
        },
    )


def test_divergence_compares_normalised_curves_at_past_offsets():
    signature = signature_with(
        {
            "layer1.h": [0.9, 0.9, 0.9, 0.9],
            "layer1.basis1": [0.9, 0.8, 0.4, 0.0],
            "layer1.basis2": [0.0, 0.8, 0.1, -0.3],  # negative info clips to 0
        }
    )
    record = basis_divergence(signature)[KEY]
    assert record["offsets"] == [0, 1, 2]
    basis = record["layers"]["layer1"]["basis"]
    assert basis["views"] == ["layer1.basis1", "layer1.basis2"]
    assert basis["curves"][1] == pytest.approx([0.8, 0.1, 0.0])
    assert basis["matrix"][0][1] == pytest.approx((0 + 0.3 + 0) / 3)
    assert basis["matrix"][0][1] == basis["matrix"][1][0] == basis["max"]
    assert curve_divergence([0.2, 0.4], [0.2, 0.4]) == 0.0
    assert basis_divergence(signature_with({"layer1.h": [0.1] * 4})) == {}


@pytest.mark.slow
def test_flstm_with_ablations_end_to_end(tmp_path):
    out = tmp_path / "run"
    quick = ["model.training.max_epochs=1", "probe.max_epochs=3", "data.num_chars=20000"]
    cfg = compose_config(out, [*FLSTM, *quick, "probe.ablate_bases=true", "probe.max_offset=3"])
    signature = run(cfg)
    raw = json.loads((out / "signature.json").read_text())
    assert raw["model"]["name"] == "flstm" and raw["model"]["params"] > 0
    views = set(raw["views"])
    assert {"layer1.basis1", "layer1.basis2", "layer1.h@basis1", "layer1.h@basis2"} <= views
    assert raw["views"]["layer1.basis2"]["dim"] == 4
    layer = raw[KEY]["layers"]["layer1"]
    assert layer["ablation"]["views"] == ["layer1.h@basis1", "layer1.h@basis2"]
    assert len(layer["basis"]["matrix"]) == 2
    assert signature.extra[KEY] == raw[KEY]
    with open(out / "bases.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["family"] for row in rows} == {"basis", "ablation"}
    assert (out / "bases.png").read_bytes()[:4] == b"\x89PNG"
