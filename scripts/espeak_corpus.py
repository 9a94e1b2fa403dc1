"""Build a speech corpus in LibriSpeech's layout from a text file with the espeak-ng synthesiser.

Every "speaker" is one combination of voice, rate and pitch; each reads the next lines of the
text. Subsets get disjoint speakers. Transcripts are upper-cased and kept to letters, spaces
and apostrophes (LibriSpeech's alphabet). The result is read with
``data=librispeech data.root=OUT data.subsets.train=train ...``.

    python scripts/espeak_corpus.py --text book.txt --out corpus \
        --subset train=6 --subset dev=2 --subset test=2 --lines 20
"""

from __future__ import annotations

import argparse
import itertools
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

ALPHABET = re.compile(r"[^A-Z' ]+")


def transcripts(text: str, min_words: int = 2, max_words: int = 14) -> list[str]:
    """Utterance transcripts: sentences split at punctuation, upper-cased, cleaned, and cut into
    pieces of at most max_words words."""
    out = []
    for sentence in re.split(r"[.!?;:\n]+", text):
        words = ALPHABET.sub(" ", sentence.upper()).split()
        words = [w.strip("'") for w in words if w.strip("'")]
        for i in range(0, len(words), max_words):
            piece = words[i : i + max_words]
            if len(piece) >= min_words:
                out.append(" ".join(piece))
    return out


def speak(text: str, voice: str, rate: int, pitch: int, sample_rate: int) -> np.ndarray:
    """espeak-ng's rendering of text, resampled to sample_rate (float32 mono)."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        command = ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(wav)]
        subprocess.run([*command, text], check=True, capture_output=True)
        samples, rate_in = sf.read(str(wav), dtype="float32", always_2d=True)
    mono = torch.from_numpy(samples.mean(1))
    return AF.resample(mono, rate_in, sample_rate).numpy()


def build(
    text_file: Path,
    out: Path,
    subsets: dict[str, int],
    lines: int,
    voices: list[str],
    rates: list[int],
    pitches: list[int],
    sample_rate: int = 16000,
) -> int:
    """Write every subset; returns the number of utterances written."""
    lines_of_text = transcripts(text_file.read_text(encoding="utf-8"))
    if not lines_of_text:
        raise SystemExit(f"{text_file}: no usable sentences (letters, spaces, apostrophes)")
    styles = itertools.cycle(itertools.product(voices, rates, pitches))
    source = itertools.cycle(lines_of_text)
    written, speaker = 0, 1000
    for subset, speakers in subsets.items():
        for _ in range(speakers):
            speaker += 1
            voice, rate, pitch = next(styles)
            chapter = out / "LibriSpeech" / subset / str(speaker) / "1"
            chapter.mkdir(parents=True, exist_ok=True)
            listing = []
            for n in range(lines):
                uid, line = f"{speaker}-1-{n:04d}", next(source)
                audio = speak(line.lower(), voice, rate, pitch, sample_rate)
                sf.write(str(chapter / f"{uid}.flac"), audio, sample_rate, format="FLAC")
                listing.append(f"{uid} {line}")
                written += 1
            (chapter / f"{speaker}-1.trans.txt").write_text("\n".join(listing) + "\n")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, required=True, help="UTF-8 text to read aloud")
    parser.add_argument("--out", type=Path, required=True, help="corpus root (gets LibriSpeech/)")
    parser.add_argument(
        "--subset",
        action="append",
        required=True,
        metavar="NAME=SPEAKERS",
        help="a subset and its number of speakers (repeat: --subset train=6 --subset dev=2)",
    )
    parser.add_argument("--lines", type=int, default=20, help="utterances per speaker")
    parser.add_argument("--voices", default="en-us,en-gb,en-sc", help="espeak-ng voices")
    parser.add_argument("--rates", default="140,175", help="words per minute")
    parser.add_argument("--pitches", default="35,50,70", help="pitch 0..99")
    parser.add_argument("--sample-rate", type=int, default=16000)
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("espeak-ng is not installed (Debian: apt-get install espeak-ng)", file=sys.stderr)
        return 2
    subsets = {}
    for entry in args.subset:
        name, _, count = entry.partition("=")
        if not name or not count.isdigit() or int(count) < 1:
            parser.error(f"--subset {entry!r}: use NAME=SPEAKERS, e.g. train=6")
        subsets[name] = int(count)
    count = build(
        args.text,
        args.out,
        subsets,
        args.lines,
        args.voices.split(","),
        [int(r) for r in args.rates.split(",")],
        [int(p) for p in args.pitches.split(",")],
        args.sample_rate,
    )
    print(f"wrote {count} utterances under {args.out / 'LibriSpeech'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
