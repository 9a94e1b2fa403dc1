"""Speech corpora: the LibriSpeech layout read from FLAC files written here, bad input, and the
synthetic corpus."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from memsig.data.corpus import PARTS
from memsig.data.speech import librispeech_corpus, load_audio
from memsig.data.synth_speech import synth_speech_corpus
from memsig.runtime.errors import ConfigError, MemsigError

RATE = 16000
GRAPHEMES = " 'ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SUBSETS = {
    "train": "train-clean-100",
    "val": "dev-clean",
    "probe_train": "dev-clean",
    "probe_test": "test-clean",
}


def write_chapter(root, subset, speaker, chapter, texts, rate=RATE, seed=0):
    """A chapter folder in LibriSpeech's layout: FLAC files and the trans.txt listing them."""
    folder = root / "LibriSpeech" / subset / str(speaker) / str(chapter)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines, audio = [], {}
    for n, text in enumerate(texts):
        uid = f"{speaker}-{chapter}-{n:04d}"
        samples = (0.3 * rng.standard_normal(int(rate * 0.2 * (n + 1)))).clip(-1, 1)
        sf.write(str(folder / f"{uid}.flac"), samples, rate, format="FLAC")
        lines.append(f"{uid} {text}")
        audio[uid] = samples
    (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return folder, audio


@pytest.fixture
def libri(tmp_path):
    """Three subsets, two speakers in train: the real layout on disk."""
    written = {}
    _, a = write_chapter(tmp_path, "train-clean-100", 19, 198, ["HELLO WORLD", "IT'S A TEST"])
    _, b = write_chapter(tmp_path, "train-clean-100", 26, 495, ["GOOD DAY"], seed=1)
    _, c = write_chapter(tmp_path, "dev-clean", 84, 121, ["ONE", "TWO", "THREE"], seed=2)
    _, d = write_chapter(tmp_path, "test-clean", 61, 70968, ["FOUR FIVE"], seed=3)
    for audio in (a, b, c, d):
        written.update(audio)
    return tmp_path, written


def test_librispeech_layout_is_read_in_order_with_transcripts_and_audio(libri):
    root, written = libri
    corpus = librispeech_corpus(str(root), SUBSETS, GRAPHEMES)
    train = corpus.parts["train"]
    assert [u.id for u in train] == ["19-198-0000", "19-198-0001", "26-495-0000"]
    assert [u.speaker for u in train] == ["19", "19", "26"]
    assert train[1].text == "IT'S A TEST"
    assert "".join(corpus.vocab[i] for i in train[1].tokens) == "IT'S A TEST"
    assert [u.text for u in corpus.parts["probe_train"]] == ["ONE", "TWO", "THREE"]
    assert corpus.parts["val"] == corpus.parts["probe_train"]
    assert [u.id for u in corpus.parts["probe_test"]] == ["61-70968-0000"]
    assert corpus.unit == "grapheme" and corpus.info == {}
    for utterance in corpus.parts["train"] + corpus.parts["probe_test"]:
        samples = load_audio(utterance, RATE)
        assert utterance.num_samples == len(written[utterance.id])
        # FLAC stores 16-bit PCM: equal up to quantisation
        np.testing.assert_allclose(samples, written[utterance.id], atol=1.0 / 2**15)


def test_missing_root_and_subset_are_clear_errors(libri, tmp_path):
    root, _ = libri
    with pytest.raises(MemsigError, match="data.root=.*no such folder"):
        librispeech_corpus(str(tmp_path / "nowhere"), SUBSETS, GRAPHEMES)
    with pytest.raises(MemsigError, match="data.subsets.probe_test=test-other"):
        librispeech_corpus(str(root), {**SUBSETS, "probe_test": "test-other"}, GRAPHEMES)
    with pytest.raises(ConfigError, match="data.subsets"):
        librispeech_corpus(str(root), {"train": "train-clean-100"}, GRAPHEMES)
    with pytest.raises(ConfigError, match="data.sample_rate=0"):
        librispeech_corpus(str(root), SUBSETS, GRAPHEMES, sample_rate=0)


def _expect(root, kind, message):
    """on_bad=error raises naming the file; on_bad=skip counts it and keeps the rest."""
    with pytest.raises(MemsigError, match=message):
        librispeech_corpus(str(root), SUBSETS, GRAPHEMES)
    corpus = librispeech_corpus(str(root), SUBSETS, GRAPHEMES, on_bad="skip")
    assert corpus.info == {f"skipped_{kind}": 1.0}
    return corpus


def test_undecodable_flac(libri):
    root, _ = libri
    bad = root / "LibriSpeech" / "train-clean-100" / "19" / "198" / "19-198-0001.flac"
    bad.write_bytes(b"not a flac file at all" * 10)
    corpus = _expect(root, "undecodable", "19-198-0001.flac: cannot be decoded")
    assert [u.id for u in corpus.parts["train"]] == ["19-198-0000", "26-495-0000"]


def test_transcript_line_without_audio(libri):
    root, _ = libri
    (root / "LibriSpeech" / "dev-clean" / "84" / "121" / "84-121-0002.flac").unlink()
    corpus = _expect(root, "missing_audio", "transcript line for 84-121-0002 but no")
    assert [u.text for u in corpus.parts["val"]] == ["ONE", "TWO"]


def test_audio_without_transcript_line(libri):
    root, _ = libri
    folder = root / "LibriSpeech" / "test-clean" / "61" / "70968"
    sf.write(str(folder / "61-70968-0009.flac"), np.zeros(800), RATE, format="FLAC")
    _expect(root, "missing_transcript", "61-70968-0009.flac: audio without a line")


def test_wrong_sample_rate(libri):
    root, _ = libri
    write_chapter(root, "test-clean", 62, 1, ["SIX"], rate=8000)
    corpus = _expect(root, "sample_rate", "sample rate 8000 Hz, but data.sample_rate=16000")
    assert [u.id for u in corpus.parts["probe_test"]] == ["61-70968-0000"]


def test_transcript_outside_the_graphemes(libri):
    root, _ = libri
    write_chapter(root, "test-clean", 63, 1, ["SEVEN 7"])
    _expect(root, "bad_transcript", r"characters \['7'\] are not in data.graphemes")


def test_synthetic_corpus_is_seeded_and_speaker_disjoint(tmp_path):
    settings = {
        "letters": "abcd",
        "utterances": dict.fromkeys(PARTS, 3),
        "speakers": {"train": 2, "val": 1, "probe_train": 1, "probe_test": 1},
        "lexicon_size": 5,
    }
    first = synth_speech_corpus(str(tmp_path / "a"), seed=3, **settings)
    again = synth_speech_corpus(str(tmp_path / "b"), seed=3, **settings)
    other = synth_speech_corpus(str(tmp_path / "a"), seed=4, **settings)
    texts = {p: [u.text for u in first.parts[p]] for p in PARTS}
    assert texts == {p: [u.text for u in again.parts[p]] for p in PARTS}
    assert texts != {p: [u.text for u in other.parts[p]] for p in PARTS}
    speakers = [{u.speaker for u in first.parts[p]} for p in PARTS]
    assert sum(len(s) for s in speakers) == len(set().union(*speakers)) == 5
    assert first.vocab == (" ", "a", "b", "c", "d")
    for u in first.parts["train"]:
        assert set(u.text) <= set(" abcd") and "  " not in u.text
        assert all(a != b for a, b in zip(u.text, u.text[1:], strict=False) if a != " ")
    with pytest.raises(ConfigError, match="data.speakers.val exceeds"):
        synth_speech_corpus(
            str(tmp_path / "c"),
            0,
            "abcd",
            settings["utterances"],
            {**settings["speakers"], "val": 9},
        )
