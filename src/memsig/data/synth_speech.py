"""A synthetic speech corpus generated from a seed, written in LibriSpeech's layout.

Every grapheme is a distinct acoustic event: two formant-like tones over a harmonic buzz at
the speaker's pitch, with a random duration and a smooth envelope; a space is a short pause.
Words come from a small random lexicon, so graphemes have history a good encoder can keep.
Speakers scale pitch and formants; noise is added throughout. The corpus is written to disk
(FLAC + trans.txt) and read back through the LibriSpeech loader, so the demo exercises the
same code path as real data. Each part has its own speakers.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import soundfile as sf

from memsig.data.corpus import PARTS
from memsig.data.speech import SpeechCorpus, librispeech_corpus
from memsig.runtime.atomic import write_json_atomic, write_text_atomic
from memsig.runtime.errors import ConfigError

SUBSETS = {"train": "train", "val": "dev", "probe_train": "probe", "probe_test": "test"}
MARKER = "synth_speech.json"


def _lexicon(letters: str, words: int, rng: np.random.Generator) -> list[str]:
    """Random words of 2..5 letters without the same letter twice in a row."""
    lexicon = set()
    while len(lexicon) < words:
        word = [rng.choice(list(letters))]
        for _ in range(int(rng.integers(1, 5))):
            word.append(rng.choice([c for c in letters if c != word[-1]]))
        lexicon.add("".join(word))
    return sorted(lexicon)


def _event(
    formants: tuple[float, float], pitch: float, seconds: float, rate: int, rng
) -> np.ndarray:
    """One grapheme: two formant tones over a harmonic buzz, Hann-like envelope."""
    t = np.arange(int(seconds * rate)) / rate
    phase = rng.uniform(0, 2 * np.pi, 3)
    buzz = sum(np.sin(2 * np.pi * pitch * h * t + phase[0] * h) / h for h in range(1, 6))
    tones = sum(np.sin(2 * np.pi * f * t + p) for f, p in zip(formants, phase[1:], strict=True))
    envelope = np.sin(np.pi * np.linspace(0, 1, len(t))) ** 0.5
    return (0.15 * buzz + 0.35 * tones) * envelope


def synth_utterance(
    text: str, table: Mapping[str, tuple[float, float]], speaker: dict, rate: int, rng
) -> np.ndarray:
    """Samples of one transcript spoken by a speaker (pitch, formant scale, speed)."""
    pieces = [np.zeros(int(rate * rng.uniform(0.05, 0.12)))]
    for grapheme in text:
        if grapheme == " ":
            pieces.append(np.zeros(int(rate * rng.uniform(0.04, 0.09))))
            continue
        f1, f2 = table[grapheme]
        scale = speaker["formant_scale"]
        seconds = rng.uniform(0.07, 0.12) * speaker["slowness"]
        pieces.append(_event((f1 * scale, f2 * scale), speaker["pitch"], seconds, rate, rng))
    pieces.append(np.zeros(int(rate * rng.uniform(0.05, 0.12))))
    audio = np.concatenate(pieces)
    audio += rng.normal(0, speaker["noise"], len(audio))
    return (0.5 * audio / max(1e-6, np.abs(audio).max())).astype(np.float32)


def write_synth_corpus(
    root: Path,
    seed: int,
    letters: str,
    utterances: Mapping[str, int],
    speakers: Mapping[str, int],
    words: tuple[int, int],
    lexicon_size: int,
    sample_rate: int,
) -> None:
    """Generate every part into root/LibriSpeech/<subset>/ (skipped when already complete)."""
    settings = {
        "seed": seed,
        "letters": letters,
        "utterances": dict(utterances),
        "speakers": dict(speakers),
        "words": list(words),
        "lexicon_size": lexicon_size,
        "sample_rate": sample_rate,
    }
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return
    marker.unlink(missing_ok=True)
    shutil.rmtree(root / "LibriSpeech", ignore_errors=True)  # another seed's or settings' files
    rng = np.random.default_rng(seed)
    # formant pairs on a grid, shuffled so neighbouring letters do not sound alike
    grid = [(f1, f2) for f1 in np.linspace(300, 900, 4) for f2 in np.linspace(1200, 3200, 5)]
    if len(letters) > len(grid):
        raise ConfigError(f"data.letters={letters!r}: at most {len(grid)} letters")
    order = rng.permutation(len(grid))[: len(letters)]
    table = {c: grid[i] for c, i in zip(letters, order, strict=True)}
    lexicon = _lexicon(letters, lexicon_size, rng)
    speaker_id = 100
    for part in PARTS:
        subset = root / "LibriSpeech" / SUBSETS[part]
        for s in range(speakers[part]):
            speaker_id += 1
            speaker = {
                "pitch": rng.uniform(90, 220),
                "formant_scale": rng.uniform(0.92, 1.08),
                "slowness": rng.uniform(0.9, 1.15),
                "noise": rng.uniform(0.01, 0.05),
            }
            chapter = subset / str(speaker_id) / "1"
            chapter.mkdir(parents=True, exist_ok=True)
            count = utterances[part] // speakers[part] + (s < utterances[part] % speakers[part])
            lines = []
            for n in range(count):
                uid = f"{speaker_id}-1-{n:04d}"
                text = " ".join(rng.choice(lexicon, int(rng.integers(words[0], words[1] + 1))))
                audio = synth_utterance(text, table, speaker, sample_rate, rng)
                sf.write(str(chapter / f"{uid}.flac"), audio, sample_rate, format="FLAC")
                lines.append(f"{uid} {text}")
            write_text_atomic(chapter / f"{speaker_id}-1.trans.txt", "\n".join(lines) + "\n")
    write_json_atomic(marker, settings)


def synth_speech_corpus(
    root: str,
    seed: int,
    letters: str,
    utterances: Mapping[str, int],
    speakers: Mapping[str, int],
    words: tuple[int, int] = (2, 5),
    lexicon_size: int = 40,
    sample_rate: int = 16000,
    on_bad: str = "error",
    name: str = "synth_speech",
) -> SpeechCorpus:
    """Write the corpus for this seed under root/seed<seed> (once) and read it back."""
    for key, table in (("utterances", utterances), ("speakers", speakers)):
        if set(table) != set(PARTS) or not all(
            isinstance(v, int) and v >= 1 for v in table.values()
        ):
            raise ConfigError(f"data.{key} needs an integer >= 1 for each of {', '.join(PARTS)}")
    for part in PARTS:
        if speakers[part] > utterances[part]:
            raise ConfigError(f"data.speakers.{part} exceeds data.utterances.{part}")
    folder = Path(root).expanduser() / f"seed{seed}"
    write_synth_corpus(
        folder, seed, letters, utterances, speakers, tuple(words), lexicon_size, sample_rate
    )
    return librispeech_corpus(
        str(folder), SUBSETS, " " + letters, sample_rate, on_bad=on_bad, name=name
    )
