"""Character-level results (chars.json) and the `memsig compare` comparison of two runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import memsig.config.compose
from conftest import PROJECT_ROOT, TINY, TINY_MARKOV
from memsig.cli import main
from memsig.commands.compare import compare_chars
from memsig.pipeline.run import run
from memsig.reports.chars import CLASSES, class_members, load_chars
from memsig.runtime.errors import MemsigError


def tiny_run(directory, *overrides):
    with initialize_config_dir(
        config_dir=str(memsig.config.compose.CONFIG_DIR), version_base="1.3"
    ):
        cfg = compose(
            config_name="config",
            overrides=[
                "model=ngram",
                "data.num_chars=8000",
                "probe.max_offset=4",
                "probe.max_epochs=8",
                "probe.batch_size=200",
                "probe.passage_chars=80",
                "logger=none",
                "trainer.enable_progress_bar=false",
                f"paths.output_dir={directory}",
                *overrides,
            ],
        )
    run(cfg)
    return directory


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return tiny_run(root / "a", "model.order=3"), tiny_run(root / "b", "model.order=2")


class Page(HTMLParser):
    """Collects the text inside the passage blocks and checks tags are closed."""

    def __init__(self):
        super().__init__()
        self.stack, self.passages = [], {}

    def handle_starttag(self, tag, attrs):
        if tag not in ("meta", "br"):
            self.stack.append((tag, dict(attrs).get("id")))

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1][0] == tag, f"unbalanced </{tag}>"
        self.stack.pop()

    def handle_data(self, data):
        ids = [i for tag, i in self.stack if tag == "pre"]
        if ids:
            self.passages[ids[-1]] = self.passages.get(ids[-1], "") + data


def test_class_members():
    members = class_members(["<unk>", "\n", " ", "!", "3", "A", "b", "e"])
    table = dict(zip(CLASSES, members.T.astype(bool).tolist(), strict=True))
    assert table["letters"] == [False, False, False, False, False, True, True, True]
    assert table["vowels"] == [False] * 5 + [True, False, True]
    assert table["consonants"] == [False] * 6 + [True, False]
    assert table["space"] == [False, True, True] + [False] * 5
    assert table["punctuation"] == [False, False, False, True] + [False] * 4
    assert table["digits"][4] and table["upper case"] == [False] * 5 + [True, False, False]


def test_chars_record_is_small_and_consistent(runs):
    record = load_chars(runs[0])
    signature = json.loads((runs[0] / "signature.json").read_text())
    assert record["offsets"] == signature["offsets"]
    passage = record["passage"]["tokens"]
    assert len(passage) == 80
    recall = np.asarray(record["views"]["context"]["recall"])
    assert recall.shape == (5, 80) and ((recall >= 0) & (recall <= 1)).all()
    assert recall[:2].min() > 0.5  # in the order-3 window: recovered at offsets 0 and 1
    letters = record["views"]["context"]["class_accuracy"]["letters"]
    assert letters[0] > 0.95
    assert (runs[0] / "chars.json").stat().st_size < 100_000


def test_memsig_compare_command_writes_png_html_csv(runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    monkeypatch.setattr(
        sys, "argv", ["memsig", "compare", str(runs[0]), str(runs[1]), "--out", str(out)]
    )
    main()
    assert {p.name for p in out.iterdir()} == {"chars.png", "chars.html", "chars_classes.csv"}
    assert "chars.html" in capsys.readouterr().out
    record = load_chars(runs[0])
    text = "".join(record["vocab"][t] for t in record["passage"]["tokens"])
    page = Page()
    page.feed((out / "chars.html").read_text())
    page.close()
    assert not page.stack
    assert page.passages["a"] == text and page.passages["b"] == text
    rows = (out / "chars_classes.csv").read_text().splitlines()
    assert rows[0] == "run,view,class,offset,accuracy,count"
    assert len(rows) == 1 + 2 * len(CLASSES) * 5


def test_chars_needs_a_signature(runs, tmp_path):
    with pytest.raises(MemsigError, match="no signature"):
        compare_chars(tmp_path, runs[1])
    shutil.copy(runs[0] / "signature.json", tmp_path / "signature.json")
    with pytest.raises(MemsigError, match="no chars.json"):
        compare_chars(tmp_path, runs[1])


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("vocab", ["x", "y"], "different vocabularies"), ("offsets", [0, 1], "probed offsets")],
)
def test_chars_refuses_runs_that_differ(runs, tmp_path, key, value, message):
    other = tmp_path / "other"
    shutil.copytree(runs[1], other, ignore=shutil.ignore_patterns("cache", "checkpoints"))
    signature = json.loads((other / "signature.json").read_text())
    (signature["data"] if key == "vocab" else signature)[key] = value
    (other / "signature.json").write_text(json.dumps(signature))
    with pytest.raises(MemsigError, match=message):
        compare_chars(runs[0], other)


def test_chars_command_error_exits_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["memsig", "compare", str(tmp_path), str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "memsig: error: no signature" in capsys.readouterr().err


@pytest.mark.slow
def test_ngram_vs_rnn_multirun_ends_with_the_comparison(tmp_path):
    """The experiment's multirun, shrunk: the count model and the LSTM as two real jobs, then
    the sweep callback compares them and logs the comparison (CSV logger: files to read)."""
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "run.py"),
            "-m",
            "experiment=ngram_vs_rnn",
            "data=markov",
            *(f"++{o}" if o.startswith("model.") else o for o in TINY),  # ngram ignores them
            *TINY_MARKOV,
            "probe.reference_orders=[2]",
            "probe.passage_chars=80",
            "probe.mlp.hidden=16",
            "logger=csv",
            "model=ngram,lstm",
            f"hydra.sweep.dir={sweep}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = sweep / "compare_chars"
    assert {"chars.png", "chars.html", "chars_classes.csv"} <= {p.name for p in out.iterdir()}
    labels = {row.split(",")[0] for row in (out / "chars_classes.csv").read_text().splitlines()[1:]}
    assert any("ngram" in label for label in labels) and any("lstm" in label for label in labels)
    logged = (out / "csv" / "hparams.yaml").read_text()
    assert str(sweep / "0") in logged and str(sweep / "1") in logged
