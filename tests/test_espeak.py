"""A tiny corpus spoken by espeak-ng (scripts/espeak_corpus.py) in LibriSpeech's layout: the
loader reads it, the encoder trains a few steps, and a grapheme signature is computed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT, SHARED_DATA, TINY_SPEECH, compose_config
from memsig.pipeline.run import run

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (Debian: apt-get install espeak-ng; .ci/run installs it)",
)


@pytest.mark.slow
def test_espeak_corpus_trains_and_signs(tmp_path):
    text = tmp_path / "text.txt"
    lines = (SHARED_DATA / "tinyshakespeare.txt").read_text().splitlines()[:60]
    text.write_text("\n".join(lines))
    corpus = tmp_path / "corpus"
    command = [sys.executable, str(PROJECT_ROOT / "scripts" / "espeak_corpus.py")]
    args = ["--text", str(text), "--out", str(corpus), "--lines", "3", "--rates", "220"]
    subsets = ["--subset", "train=2", "--subset", "dev=1", "--subset", "test=1"]
    done = subprocess.run([*command, *args, *subsets], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "wrote 12 utterances" in done.stdout
    speakers = {p.name for p in (corpus / "LibriSpeech" / "train").iterdir()}
    assert len(speakers) == 2
    cfg = compose_config(
        tmp_path / "run",
        [
            "data=librispeech",
            f"data.root={corpus}",
            "data.subsets={train: train, val: dev, probe_train: dev, probe_test: test}",
            "model.training.max_epochs=1",
        ],
        [o for o in TINY_SPEECH if not o.startswith("data.")],
    )
    signature = run(cfg)
    stored = json.loads((tmp_path / "run" / "signature.json").read_text())
    assert stored["data"]["name"] == "librispeech"
    assert stored["data"]["unit"] == "grapheme"
    assert stored["data"]["vocab"][:2] == [" ", "'"]
    assert set(signature.views) >= {"input", "layer1.h", "layer2.c", "logits"}
    assert "val/cer" in stored["model"]["metrics"]
