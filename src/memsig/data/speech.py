"""Speech corpora in LibriSpeech's directory layout, read with soundfile.

``<root>/LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac`` with one
``<speaker>-<chapter>.trans.txt`` per chapter (lines ``<utterance id> <TRANSCRIPT>``). Each part
(train, val, probe_train, probe_test) is read from its own subset, so probe splits follow
utterances and speakers, never frames. Bad files are either an error (``on_bad=error``) or a
counted, logged skip (``on_bad=skip``); never a silent wrong result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from memsig.data.corpus import PARTS
from memsig.runtime.errors import ConfigError, MemsigError

log = logging.getLogger(__name__)

ON_BAD = ("error", "skip")
DOWNLOAD_URL = "https://www.openslr.org/resources/12/{subset}.tar.gz"


@dataclass(frozen=True)
class Utterance:
    """One recording and its transcript (token ids into the corpus vocabulary)."""

    id: str
    speaker: str
    path: Path
    text: str
    tokens: np.ndarray  # int64 grapheme ids
    num_samples: int


@dataclass(frozen=True)
class SpeechCorpus:
    """Utterances per part in graphemes; the blank is not in `vocab` (the CTC head adds it)."""

    name: str
    vocab: tuple[str, ...]
    parts: dict[str, list[Utterance]]
    sample_rate: int
    info: dict[str, float] = field(default_factory=dict)
    unit: str = "grapheme"

    def fingerprint(self) -> str:
        """sha256 of name, vocab, and per utterance its id, transcript, file size and mtime."""
        digest = hashlib.sha256(json.dumps([self.name, list(self.vocab)]).encode())
        for part in PARTS:
            for u in self.parts[part]:
                stat = u.path.stat()
                digest.update(
                    f"{part}|{u.id}|{u.text}|{stat.st_size}|{stat.st_mtime_ns}\n".encode()
                )
        return digest.hexdigest()


class BadInput:
    """Raise (on_bad=error) or count and log (on_bad=skip) one problem with the corpus."""

    def __init__(self, on_bad: str) -> None:
        if on_bad not in ON_BAD:
            raise ConfigError(f"data.on_bad={on_bad!r}: must be one of {', '.join(ON_BAD)}")
        self.on_bad = on_bad
        self.counts: Counter[str] = Counter()

    def __call__(self, kind: str, message: str) -> None:
        if self.on_bad == "error":
            raise MemsigError(f"{message} (set data.on_bad=skip to skip such utterances)")
        self.counts[kind] += 1
        log.warning("skipped: %s", message)


def encode_transcript(text: str, vocab: Sequence[str]) -> np.ndarray | None:
    """Grapheme ids of text, or None when a character is outside vocab."""
    index = {g: i for i, g in enumerate(vocab)}
    try:
        return np.array([index[c] for c in text], dtype=np.int64)
    except KeyError:
        return None


def read_subset(
    subset_dir: Path, vocab: Sequence[str], sample_rate: int, bad: BadInput
) -> list[Utterance]:
    """Every utterance of one LibriSpeech-layout subset, in sorted (speaker, chapter, id) order."""
    utterances = []
    transcripts = sorted(subset_dir.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise MemsigError(
            f"{subset_dir} holds no <speaker>/<chapter>/*.trans.txt files: point data.root at "
            "the folder that contains LibriSpeech/<subset>/"
        )
    for transcript in transcripts:
        chapter = transcript.parent
        listed = set()
        for number, line in enumerate(transcript.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            listed.add(uid)
            where = f"{transcript}:{number}"
            path = chapter / f"{uid}.flac"
            if not path.is_file():
                bad("missing_audio", f"{where}: transcript line for {uid} but no {path.name}")
                continue
            tokens = encode_transcript(text, vocab)
            if tokens is None or len(tokens) == 0:
                unknown = sorted(set(text) - set(vocab)) or ["<empty transcript>"]
                bad("bad_transcript", f"{where}: characters {unknown} are not in data.graphemes")
                continue
            try:
                audio = sf.info(str(path))
            except (sf.LibsndfileError, RuntimeError) as err:
                bad("undecodable", f"{path}: cannot be decoded as audio ({err})")
                continue
            if audio.samplerate != sample_rate:
                bad(
                    "sample_rate",
                    f"{path}: sample rate {audio.samplerate} Hz, but data.sample_rate="
                    f"{sample_rate}; resample the corpus or set data.sample_rate",
                )
                continue
            if audio.channels != 1:
                bad("channels", f"{path}: {audio.channels} channels; only mono audio is read")
                continue
            utterances.append(
                Utterance(uid, chapter.parent.name, path, text, tokens, int(audio.frames))
            )
        for orphan in sorted(p for p in chapter.glob("*.flac") if p.stem not in listed):
            bad("missing_transcript", f"{orphan}: audio without a line in {transcript.name}")
    return utterances


def load_audio(utterance: Utterance, sample_rate: int) -> np.ndarray:
    """The utterance's samples as float32, checked against what the corpus scan recorded."""
    try:
        samples, rate = sf.read(str(utterance.path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise MemsigError(f"{utterance.path}: cannot be decoded as audio ({err})") from None
    if rate != sample_rate or samples.ndim != 1 or len(samples) != utterance.num_samples:
        raise MemsigError(
            f"{utterance.path} changed since the corpus was read (rate {rate}, shape "
            f"{samples.shape}): rerun so the corpus is scanned again"
        )
    return samples


def download_subset(root: Path, subset: str) -> None:
    """Fetch and unpack one LibriSpeech subset from OpenSLR into root (needs a network)."""
    url = DOWNLOAD_URL.format(subset=subset)
    archive = root / f"{subset}.tar.gz"
    root.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s", url)
    try:
        urllib.request.urlretrieve(url, archive)
    except OSError as err:
        raise MemsigError(
            f"cannot download {url} ({err}): fetch it by hand and unpack it into {root}, "
            "or set data.download=false"
        ) from None
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    archive.unlink()


def librispeech_corpus(
    root: str,
    subsets: Mapping[str, str],
    graphemes: str,
    sample_rate: int = 16000,
    on_bad: str = "error",
    download: bool = False,
    max_utterances: int | None = None,
    name: str = "librispeech",
) -> SpeechCorpus:
    """Read each part from its subset of ``<root>/LibriSpeech``; at most max_utterances each."""
    if set(subsets) != set(PARTS):
        raise ConfigError(
            f"data.subsets has keys {sorted(subsets)}: it needs exactly {', '.join(PARTS)} "
            "(e.g. data.subsets.probe_test=test-clean)"
        )
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate < 1:
        raise ConfigError(f"data.sample_rate={sample_rate!r}: must be an integer >= 1 (e.g. 16000)")
    base = Path(root).expanduser()
    if not base.is_dir() and not download:
        raise MemsigError(
            f"data.root={root}: no such folder; point it at the folder holding LibriSpeech/, "
            "or set data.download=true to fetch the subsets"
        )
    vocab = tuple(graphemes)
    if len(set(vocab)) != len(vocab) or len(vocab) < 2:
        raise ConfigError(f"data.graphemes={graphemes!r}: needs at least 2 distinct characters")
    bad = BadInput(on_bad)
    parts, read = {}, {}
    for part in PARTS:
        subset = subsets[part]
        subset_dir = base / "LibriSpeech" / subset
        if not subset_dir.is_dir() and download:
            download_subset(base, subset)
        if not subset_dir.is_dir():
            raise MemsigError(
                f"data.subsets.{part}={subset}: no folder {subset_dir}; unpack that subset "
                "there, pick another subset, or set data.download=true"
            )
        if subset not in read:
            read[subset] = read_subset(subset_dir, vocab, sample_rate, bad)
        parts[part] = read[subset][:max_utterances]
        if not parts[part]:
            raise MemsigError(f"data.subsets.{part}={subset}: no usable utterances in {subset_dir}")
    info = {f"skipped_{kind}": float(n) for kind, n in sorted(bad.counts.items())}
    if bad.counts:
        log.warning("skipped utterances: %s", dict(bad.counts))
    return SpeechCorpus(name, vocab, parts, sample_rate, info)
