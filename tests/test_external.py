"""Users' own models: `model=external` and `memsig.signature_of` on language models written
in plain PyTorch. States against a step-by-step nn.LSTMCell / nn.GRUCell loop with the same
weights; the API against the command's pipeline on the same model."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import memsig
from conftest import PROJECT_ROOT, compose_config
from memsig.commands.audit import audit_run
from memsig.config.compose import build
from memsig.models.external import ExternalNetwork
from memsig.pipeline.plan import prepare
from memsig.pipeline.run import run
from memsig.runtime.errors import ConfigError, MemsigError
from plain_models import PlainGRU, PlainLSTM, save_model, train_lm

pytestmark = pytest.mark.slow  # every test trains a model and probes it

# the probes of these tests: offsets 0..2, few epochs, one extraction row (the states of a
# whole part from a zero state, which the step-by-step reference reproduces)
PROBE = [
    "probe.max_offset=2",
    "probe.max_epochs=4",
    "probe.extract.segments=1",
    "probe.extract.chunk=96",
    "threads=1",
]


def step_by_step(rnn: nn.RNNBase, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every layer's (h, c) sequences ([B, T, H]; c is None for a GRU) from a zero state, one
    cell step at a time, with `rnn`'s weights copied into nn.LSTMCell / nn.GRUCell."""
    lstm = isinstance(rnn, nn.LSTM)
    layers = []
    for layer in range(rnn.num_layers):
        cell = (nn.LSTMCell if lstm else nn.GRUCell)(x.shape[-1], rnn.hidden_size).to(x.dtype)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).data.copy_(getattr(rnn, f"{name}_l{layer}"))
        h = c = x.new_zeros(x.shape[0], rnn.hidden_size)
        hs, cs = [], []
        for t in range(x.shape[1]):
            if lstm:
                h, c = cell(x[:, t], (h, c))
            else:
                h = cell(x[:, t], h)
            hs.append(h)
            cs.append(c)
        x = torch.stack(hs, 1)
        layers.append((x, torch.stack(cs, 1) if lstm else None))
    return layers


def reference_views(model: nn.Module, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The views memsig must find in PlainLSTM / PlainGRU, computed by the loop."""
    rnn = model.lstm if isinstance(model, PlainLSTM) else model.gru
    out = {}
    for i, (h, c) in enumerate(step_by_step(rnn, model.embed(tokens)), start=1):
        out[f"layer{i}.h"] = h
        if c is not None:
            out[f"layer{i}.c"] = c
    out["logits"] = torch.log_softmax(model.head(h), -1)
    return out


@torch.no_grad()
@pytest.mark.parametrize("cls", [PlainLSTM, PlainGRU])
def test_adapter_views_match_step_by_step_loop(cls):
    """Views over a stream read in three chunks (state carried) equal the loop's, atol 1e-5;
    a hooked submodule's output is a view."""
    torch.manual_seed(0)
    model = cls(7).eval()
    net = ExternalNetwork(model, 7, {"embedding": "embed"})
    expected = {"layer1.h": 32, "logits": 7, "embedding": 8}
    if cls is PlainLSTM:
        expected.update({"layer1.c": 32, "layer2.h": 32, "layer2.c": 32})
    assert net.view_dims == {k: expected[k] for k in net.view_dims}
    assert set(net.view_dims) == set(expected)
    tokens = torch.randint(0, 7, (3, 50))
    pieces, state = [], None
    for chunk in tokens.split([20, 7, 23], dim=1):
        views, state = net.views(chunk, state)
        pieces.append(views)
    reference = reference_views(model, tokens)
    reference["embedding"] = model.embed(tokens)
    for name in expected:
        got = torch.cat([p[name] for p in pieces], 1)
        torch.testing.assert_close(got, reference[name], atol=1e-5, rtol=0)


def user_model(cls, tmp_path):
    """A plain-PyTorch LM trained on the tiny Markov stream, with its own vocabulary (another
    order than memsig's, and a symbol the data never uses), saved as a user would."""
    corpus = build(compose_config(tmp_path / "data", ["model=external"]).data)
    vocab = ["<pad>", *reversed(corpus.vocab)]
    ids = np.array([vocab.index(symbol) for symbol in corpus.vocab])
    torch.manual_seed(0)
    model = train_lm(cls(len(vocab)), ids[corpus.parts["train"]])
    weights, vocab_file = save_model(model, vocab, tmp_path / "model")
    overrides = [
        "model=external",
        f"model.target=plain_models.{cls.__name__}",
        f"model.kwargs={{vocab_size: {len(vocab)}}}",
        f"model.weights={weights}",
        f"model.vocab={vocab_file}",
    ]
    return model, vocab, ids[corpus.parts["probe_test"]], overrides


@torch.no_grad()
def exact_views(model: nn.Module, ids: np.ndarray) -> dict[str, np.ndarray]:
    """The loop's views of one stream, computed in float64: the exact states."""
    views = reference_views(copy.deepcopy(model).double(), torch.as_tensor(ids)[None])
    return {name: value[0].numpy() for name, value in views.items()}


def check_states(run_dir, views, exact: dict[str, np.ndarray]) -> None:
    """The probe-test part's cached states equal the exact ones within 1e-5. The cell states
    of a trained LSTM reach |c| ~ 35 over thousands of steps, where float32 keeps 7 digits:
    there they may also differ by 1e-6 of their size (a float32 LSTMCell loop misses the
    exact ones by 1.8e-5 at |c| = 35; memsig's by 1.5e-5)."""
    for view in views:
        states = np.load(run_dir / "cache" / "probe_test" / f"{view}.npy")
        rtol = 1e-6 if view.endswith(".c") else 0
        np.testing.assert_allclose(states, exact[view], atol=1e-5, rtol=rtol, err_msg=view)


def test_model_external_lstm(tmp_path):
    """A 2-layer nn.LSTM LM probed with model=external: its layers' h and c and its logits are
    views, the cached states equal the step-by-step loop's (atol 1e-5), k=0 is decoded."""
    model, _, test_ids, overrides = user_model(PlainLSTM, tmp_path)
    signature = run(compose_config(tmp_path / "run", [*overrides, *PROBE]))
    assert list(signature.views) == ["layer1.h", "layer1.c", "layer2.h", "layer2.c", "logits"]
    assert signature.model["name"] == "external"
    assert 0 < signature.model["metrics"]["val/bpc"] < np.log2(6)
    check_states(tmp_path / "run", signature.views, exact_views(model, test_ids))
    for view in ("layer1.h", "layer1.c", "layer2.h", "layer2.c"):  # the states
        assert signature.views[view].accuracy[signature.offsets.index(0)] >= 0.95, view


def test_model_external_gru_and_signature_of_agree(tmp_path):
    """An nn.GRU LM (time first, its own zero state, a tuple out) through model=external:
    states equal the loop's, k=0 decoded; memsig.signature_of on the same model object, given
    the same probe parts, gives the same numbers."""
    model, vocab, test_ids, overrides = user_model(PlainGRU, tmp_path)
    cfg = compose_config(tmp_path / "run", [*overrides, *PROBE])
    signature = run(cfg)
    assert list(signature.views) == ["layer1.h", "logits"]
    check_states(tmp_path / "run", signature.views, exact_views(model, test_ids))
    assert signature.views["layer1.h"].accuracy[0] >= 0.95

    corpus = build(cfg.data)
    parts = {part: [corpus.vocab[i] for i in corpus.parts[part]] for part in corpus.parts}
    model.train()  # the caller's mode, which signature_of gives back
    api = memsig.signature_of(
        model,
        parts,
        vocab=vocab,
        offsets=range(3),
        run_dir=tmp_path / "api",
        **{o.split("=")[0]: o.split("=")[1] for o in PROBE if "offset" not in o},
        probe__batch_size=512,
    )
    assert isinstance(api, memsig.Signature)
    assert model.training
    assert api.offsets == signature.offsets == [0, 1, 2]
    assert api.baseline == signature.baseline
    for view, scores in signature.views.items():
        assert api.views[view] == scores, view
    assert api.model["metrics"] == signature.model["metrics"]  # val/bpc on the same val part
    loaded = memsig.Signature.load(tmp_path / "api")
    assert loaded.views == api.views
    assert loaded.plot().axes
    # the tokens passed in are not in the run's config: audit says so rather than checking
    # the signature against other data
    with pytest.raises(MemsigError, match="cannot be rebuilt from its config.yaml"):
        audit_run(tmp_path / "api")


def plan_of(tmp_path, *overrides):
    return prepare(compose_config(tmp_path / "run", ["model=external", *overrides]))


def test_external_refusals(tmp_path):
    """stage=base, symbols outside the model's vocabulary, missing keys and bidirectional
    recurrent modules are refused with what to do; model.unknown maps the outside symbols."""
    torch.manual_seed(0)
    vocab = ["a", "b", "c"]  # the data uses a..f
    weights, vocab_file = save_model(PlainLSTM(3), vocab, tmp_path / "model")
    files = [
        "model.target=plain_models.PlainLSTM",
        "model.kwargs={vocab_size: 3}",
        f"model.weights={weights}",
        f"model.vocab={vocab_file}",
    ]
    with pytest.raises(ConfigError, match="stage=base trains a model"):
        plan_of(tmp_path, *files, "stage=base", "model.unknown=c")
    with pytest.raises(ConfigError, match=r"uses 3 symbols .*'d', 'e', 'f'.*model.unknown"):
        plan_of(tmp_path, *files)
    with pytest.raises(ConfigError, match="needs model.weights, model.vocab"):
        plan_of(tmp_path, files[0])
    plan = plan_of(tmp_path, *files, "model.unknown=c")
    assert plan.corpus.vocab == tuple(vocab)
    probe = plan.corpus.parts["probe_test"]
    assert set(np.unique(probe)) <= {0, 1, 2} and np.mean(probe == 2) > 0.4  # c, d, e, f -> c
    with pytest.raises(ConfigError, match="bidirectional"):
        ExternalNetwork(nn.Sequential(nn.Embedding(3, 4), nn.GRU(4, 4, bidirectional=True)), 3)


def test_signature_of_reads_text_and_ids(tmp_path):
    """Text and id streams give the same probe data; the last test_fraction tests."""
    from memsig.api import token_corpus

    vocab = ["x", "a", "b"]
    text = "abba" * 25
    by_text = token_corpus(text, vocab, 0.3)
    by_ids = token_corpus(np.array([vocab.index(s) for s in text]), vocab, 0.3)
    assert by_text.vocab == by_ids.vocab == ("a", "b")
    for part in by_text.parts:
        np.testing.assert_array_equal(by_text.parts[part], by_ids.parts[part])
    assert len(by_text.parts["probe_test"]) == 30 and len(by_text.parts["train"]) == 0
    with pytest.raises(ConfigError, match=r"ids in \[0, 3\)"):
        token_corpus([0, 3], vocab)


def test_example_script(tmp_path):
    """examples/probe_your_own_lstm.py runs as a user runs it, in under a minute: its LSTM
    holds the last 3 characters of the repeat source (offsets 0..2) and forgets beyond."""
    script = PROJECT_ROOT / "examples" / "probe_your_own_lstm.py"
    source = str(Path(memsig.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = tmp_path / "outputs" / "example_lstm"
    signature = memsig.Signature.load(run_dir)
    for view in ("layer1.h", "layer2.h"):
        info = signature.views[view].info_bits
        assert min(info[1:3]) > 2.0 and info[6] < 1.0, (view, info)
    assert (run_dir / "signature_example.png").stat().st_size > 10_000
