"""Acoustic features with torchaudio: log-mel filterbanks, normalisation, SpecAugment, stacking.

Every part takes and returns ``(features [B, T, F], lengths [B])`` so the number of valid frames
of each utterance is tracked through every step (padding never counts as speech).
"""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn

NORMALISE = ("utterance", "global", "none")


def frame_mask(lengths: Tensor, steps: int) -> Tensor:
    """[B, steps] True on the valid frames of each utterance."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


class LogMel(nn.Module):
    """Log-mel filterbanks (window and hop in ms) with mean/variance normalisation.

    ``normalise="utterance"`` uses each utterance's own valid frames; ``"global"`` uses
    statistics gathered once over the training data (:meth:`fit_global`), stored as buffers so
    they travel with the checkpoint. The centred STFT pads with zeros, as the batch padding
    does, so an utterance's features do not depend on the batch it is in.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 80,
        window_ms: float = 25.0,
        hop_ms: float = 10.0,
        normalise: str = "utterance",
    ) -> None:
        super().__init__()
        if normalise not in NORMALISE:
            raise ValueError(f"normalise={normalise!r}: must be one of {', '.join(NORMALISE)}")
        self.hop = int(round(sample_rate * hop_ms / 1000))
        window = int(round(sample_rate * window_ms / 1000))
        self.normalise = normalise
        self.n_mels = n_mels
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=window,
            win_length=window,
            hop_length=self.hop,
            n_mels=n_mels,
            center=True,
            pad_mode="constant",
        )
        self.register_buffer("global_mean", torch.zeros(n_mels))
        self.register_buffer("global_std", torch.ones(n_mels))

    def frame_lengths(self, sample_lengths: Tensor) -> Tensor:
        """Frames of a centred STFT: one per hop, plus one."""
        return torch.div(sample_lengths, self.hop, rounding_mode="floor") + 1

    @torch.no_grad()
    def fit_global(self, batches) -> None:
        """Global mean and standard deviation per mel bin over (waveforms, lengths) batches."""
        total = torch.zeros(self.n_mels, dtype=torch.float64)
        square = torch.zeros(self.n_mels, dtype=torch.float64)
        count = 0
        for waves, lengths in batches:
            feats, frames = self._log_mel(waves, lengths)
            valid = feats[frame_mask(frames, feats.shape[1])].double()
            total += valid.sum(0)
            square += valid.square().sum(0)
            count += len(valid)
        mean = total / count
        self.global_mean.copy_(mean)
        self.global_std.copy_((square / count - mean.square()).clamp_min(1e-10).sqrt())

    def _log_mel(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        feats = (self.mel(waves) + 1e-6).log().transpose(1, 2)  # [B, T, n_mels]
        frames = self.frame_lengths(lengths)
        return feats, frames

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        feats, frames = self._log_mel(waves, lengths)
        mask = frame_mask(frames, feats.shape[1]).unsqueeze(-1)
        if self.normalise == "utterance":
            n = frames.clamp_min(1)[:, None, None].to(feats)
            mean = (feats * mask).sum(1, keepdim=True) / n
            var = ((feats - mean).square() * mask).sum(1, keepdim=True) / n
            feats = (feats - mean) / (var + 1e-5).sqrt()
        elif self.normalise == "global":
            feats = (feats - self.global_mean) / self.global_std
        return feats * mask, frames


class SpecAugment(nn.Module):
    """Frequency and time masks (torchaudio), applied in training mode only."""

    def __init__(
        self, freq_masks: int = 2, freq_width: int = 15, time_masks: int = 2, time_width: int = 20
    ) -> None:
        super().__init__()
        self.freq = nn.ModuleList(
            torchaudio.transforms.FrequencyMasking(freq_width) for _ in range(freq_masks)
        )
        self.time = nn.ModuleList(
            torchaudio.transforms.TimeMasking(time_width, iid_masks=True) for _ in range(time_masks)
        )

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if not self.training:
            return feats, lengths
        x = feats.transpose(1, 2).unsqueeze(1)  # [B, 1, F, T]: masks per utterance
        for mask in [*self.freq, *self.time]:
            x = mask(x)
        return x.squeeze(1).transpose(1, 2), lengths


class FrameStack(nn.Module):
    """Concatenate `stack` consecutive frames and keep every `subsample`-th (lengths follow)."""

    def __init__(self, stack: int = 1, subsample: int = 1) -> None:
        super().__init__()
        if stack < 1 or subsample < 1:
            raise ValueError(f"stack={stack}, subsample={subsample}: both must be >= 1")
        self.stack, self.subsample = stack, subsample

    def out_lengths(self, lengths: Tensor) -> Tensor:
        return torch.div(lengths + self.subsample - 1, self.subsample, rounding_mode="floor")

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if self.stack > 1:
            padded = nn.functional.pad(feats, (0, 0, 0, self.stack - 1))
            feats = padded.unfold(1, self.stack, 1).transpose(2, 3).flatten(2)
        return feats[:, :: self.subsample], self.out_lengths(lengths)
