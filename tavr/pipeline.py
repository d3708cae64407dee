"""TAVRPipeline: reference video + target background + driving audio -> talking video.

One call in the stages diffusers splits a pipeline into (check_inputs, encode_conditions,
prepare_background, denoise, finish), the denoising loop written out. Audio longer
than one chunk is generated chunk by chunk; every chunk after the first is
conditioned on the last `motion_frames` latent frames of the one before, and
the video is cut to the audio's length.

A saved pipeline is a folder:

    model_index.json            encoder choice, generation defaults, format version
    transformer/config.json     TAVRTransformer3DModel config
    transformer/model.safetensors
    vae/config.json, vae/model.safetensors   the codec (PatchCodec; a TAVRVAE folder holds vae_config.json, vae.safetensors)
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tavr import flow
from tavr.config import GenerateConfig, ModelConfig, build_config
from tavr.data.framing import face_sample
from tavr.models.encoders import build_audio_encoder, build_text_encoder
from tavr.models.transformer import TAVRTransformer3DModel
from tavr.models.codec import PatchCodec
from tavr.models.vae import TAVRVAE, build_vae, load_vae

FORMAT = "tavr-pipeline/1"
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


@dataclass
class GenerationOutput:
    frames: np.ndarray  # (F, H, W, 3) uint8
    fps: int
    audio: np.ndarray  # (N,) float32 driving audio, cut or padded to the video's length
    audio_rate: int
    seconds: float  # wall time of the call
    path: Path | None = None
    latents: list[torch.Tensor] | None = None  # per chunk (1, C, F', h, w)


@dataclass
class Inputs:
    """Checked inputs of one call, at the model's size (TAVRPipeline.check_inputs)."""

    reference: np.ndarray  # (Fr, S, S, 3) uint8, at most reference_frames
    reference_audio: np.ndarray | None  # (N,) float32 or None
    background: np.ndarray  # (Fb, S, S, 3) uint8: the crop the person is generated in
    mask: np.ndarray | None  # (S, S) or (Fm, S, S) bool where the person goes, or None (found in the background)
    driving_audio: np.ndarray  # (N,) float32
    total: int  # output frames: the driving audio's length
    full_background: np.ndarray | None  # the whole background to paste into (None: it is the crop)
    where: object  # the crop's place in full_background (tavr.data.framing)


def to_video_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float (1, 3, F, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0


def to_frames(video: torch.Tensor) -> np.ndarray:
    """float (1, 3, F, H, W) in [-1, 1] -> uint8 (F, H, W, 3)."""
    return ((video[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).cpu().numpy()


def mask_to_latent(mask: np.ndarray, spatial: int = 8) -> torch.Tensor:
    """Person mask (F, H, W) bool (F = 4k + 1) -> (1, 1, F', H/8, W/8) float, max over each latent cell."""
    m = torch.from_numpy(np.array(mask, dtype=np.float32))[:, None]  # (F, 1, H, W); a copy: masks may be read-only views
    m = F.max_pool2d(m, spatial)  # (F, 1, h, w)
    groups = [m[:1]] + [m[i : i + 4] for i in range(1, m.shape[0], 4)]
    return torch.stack([g.amax(dim=0) for g in groups], dim=1)[None]  # (1, 1, F', h, w)


def masked_background(latent: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The target-background condition: latent (B, C, F', h, w) with every cell the person touches zeroed.

    mask (B, 1, F', h, w) from `mask_to_latent`. Training builds it from cached target latents by
    the same rule, so one VAE pass serves both the target and its background.
    """
    return latent * (1 - mask.to(latent.dtype))


def reference_length(frames: int, cap: int) -> int:
    """Frames of the reference used: the largest 4k + 1 <= min(frames, cap)."""
    n = min(frames, cap)
    return n - (n - 1) % 4 if n >= 1 else 0


def save_pipeline(directory: str | Path, transformer: TAVRTransformer3DModel, vae, config: GenerateConfig) -> None:
    """A pipeline folder (transformer/, vae/, model_index.json) from its parts, without building the
    encoders: what a training stage writes, also on a machine without the encoders' packages."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    transformer.save_pretrained(directory / "transformer")
    vae.save(directory / "vae")
    index = {"format": FORMAT, "generate": dataclasses.asdict(config)}
    (directory / "model_index.json").write_text(json.dumps(index, indent=1))


class TAVRPipeline:
    def __init__(self, transformer: TAVRTransformer3DModel, vae: PatchCodec | TAVRVAE, config: GenerateConfig):
        self.transformer, self.vae, self.config = transformer.eval(), vae.eval(), config
        self.text_encoder = build_text_encoder(config.text_encoder, config.text_encoder_path or None)
        self.audio_encoder = build_audio_encoder(config.audio_encoder, config.audio_encoder_path or None, context=config.audio_context)
        if self.audio_encoder.dim != transformer.config.audio_dim or self.text_encoder.dim != transformer.config.text_dim:
            raise ValueError(
                f"encoders give text {self.text_encoder.dim} / audio {self.audio_encoder.dim} features; "
                f"the transformer expects {transformer.config.text_dim} / {transformer.config.audio_dim}"
            )

    @classmethod
    def from_config(cls, model: ModelConfig, generate: GenerateConfig, seed: int = 0) -> TAVRPipeline:
        """A new, untrained pipeline (random weights, seeded)."""
        torch.manual_seed(seed)
        return cls(TAVRTransformer3DModel(model), build_vae(generate.vae), generate)

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def to(self, device) -> TAVRPipeline:
        for m in (self.transformer, self.vae, self.text_encoder, self.audio_encoder):
            m.to(device)
        return self

    # ----- saving and loading -----

    def save_pretrained(self, directory: str | Path) -> None:
        save_pipeline(directory, self.transformer, self.vae, self.config)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides) -> TAVRPipeline:
        """Load a saved pipeline; `overrides` replace generation defaults (e.g. steps=10)."""
        directory = Path(directory)
        index_path = directory / "model_index.json"
        if not index_path.is_file():
            from tavr.eval.export import not_exported_reason

            raise FileNotFoundError(not_exported_reason(directory) or f"{directory} is not a TAVR pipeline folder (no model_index.json)")
        index = json.loads(index_path.read_text())
        if index.get("format") != FORMAT:
            raise ValueError(f"{index_path}: format {index.get('format')!r}, expected {FORMAT!r}")
        generate = build_config({"generate": {**index["generate"], **overrides}}).generate
        transformer = TAVRTransformer3DModel.from_pretrained(directory / "transformer")
        return cls(transformer, load_vae(directory / "vae"), generate)

    # ----- conditioning -----

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (F, H, W, 3), F = 4k + 1 -> normalised latent (1, C, F', H/8, W/8)."""
        return self.vae.encode(to_video_tensor(frames).to(self.device))

    def _check_frames(self, name: str, frames: np.ndarray) -> None:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8 frames (F, H, W, 3); got {frames.dtype} {frames.shape}")
        if min(frames.shape[1:3]) < self.config.size // 2:
            raise ValueError(f"{name} frames are {frames.shape[2]}x{frames.shape[1]}; this model needs at least "
                             f"{self.config.size // 2} pixels a side (it works on {self.config.size}x{self.config.size} face crops)")  # fmt: skip

    def background_mask(self, background: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Where the person goes (F, H, W) bool: the person found in the background, else the reference's place."""
        from tavr.data.ingest import box_mask, track_faces

        size = self.config.size
        boxes, found = track_faces(background, 2 * size)
        if found.any():
            return box_mask(boxes, size, size)
        boxes, found = track_faces(face_sample(reference), 2 * size)
        box = np.median(boxes[found], axis=0, keepdims=True)
        return np.repeat(box_mask(box, size, size), len(background), axis=0)

    def _load(self, reference_video, reference_audio, target_background, driving_audio):
        """Arrays as given; files read with their frame size checked from the header first, and only
        what generation uses decoded: the reference's first frames, the background for as long as
        the audio, both at a bounded size (tavr.data.video.read_checked)."""
        cfg = self.config
        if not any(isinstance(x, (str, Path)) for x in (reference_video, reference_audio, target_background, driving_audio)):
            return np.asarray(reference_video), reference_audio, np.asarray(target_background), driving_audio
        from tavr.data.video import read_audio, read_checked  # PyAV, only for files

        if isinstance(driving_audio, (str, Path)):
            driving_audio = read_audio(driving_audio, cfg.audio_rate)
        seconds = len(np.asarray(driving_audio).reshape(-1)) / cfg.audio_rate + 1.0
        if isinstance(reference_video, (str, Path)):
            clip = read_checked(reference_video, cfg.fps, cfg.audio_rate, cfg.reference_frames / cfg.fps + 0.5, 4 * cfg.size, "reference")
            reference_video = clip.frames
            reference_audio = clip.audio if reference_audio is None else reference_audio
        if isinstance(reference_audio, (str, Path)):
            reference_audio = read_audio(reference_audio, cfg.audio_rate)
        if isinstance(target_background, (str, Path)):
            if Path(target_background).suffix.lower() in IMAGE_EXTS:
                from PIL import Image

                from tavr.data.video import check_frame_size

                with Image.open(target_background) as img:
                    check_frame_size(*img.size, "target background frames")
                    target_background = np.asarray(img.convert("RGB"))
            else:
                target_background = read_checked(target_background, cfg.fps, cfg.audio_rate, seconds, cfg.max_output_side,
                                                 "target background").frames  # fmt: skip
        return np.asarray(reference_video), reference_audio, np.asarray(target_background), driving_audio

    def _frame(self, reference: np.ndarray, background: np.ndarray, mask: np.ndarray | None):
        """Real footage -> the model's face crops (tavr.data.framing): the reference cropped around its
        face; the background (scaled to at most `max_output_side`) around the person it shows, else its
        centre. Returns (reference, background crop, mask crop or None, full background, its framing)."""
        from tavr.config import IngestConfig
        from tavr.data import framing

        size, ingest = self.config.size, IngestConfig()  # the crop `tavr ingest` made the training clips with
        if reference.shape[1:3] != (size, size):
            reference = framing.crop(reference, framing.face_framing(reference, ingest, True, "reference"), size)
        if background.shape[1:3] == (size, size):
            return reference, background, mask, None, None
        full = framing.limit_side(background, self.config.max_output_side)
        where = framing.face_framing(full, ingest, False, "target background")
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            mask = mask[None] if mask.ndim == 2 else mask
            if mask.shape[1:3] != background.shape[1:3]:
                raise ValueError(f"background_mask is {mask.shape[2]}x{mask.shape[1]}; the background is "
                                 f"{background.shape[2]}x{background.shape[1]}")  # fmt: skip
            mask = framing.crop(framing.resize_masks(mask, *full.shape[1:3]), where, size)
        return reference, framing.crop(full, where, size), mask, full, where

    # ----- generation -----

    @torch.no_grad()
    def __call__(
        self,
        reference_video: np.ndarray | str | Path,
        target_background: np.ndarray | str | Path,
        driving_audio: np.ndarray | str | Path,
        reference_audio: np.ndarray | str | Path | None = None,
        background_mask: np.ndarray | None = None,
        prompt: str = "",
        num_steps: int | None = None,
        reference_guidance: float | None = None,
        audio_guidance: float | None = None,
        keep_ratio: float | None = None,
        seed: int = 0,
        out_path: str | Path | None = None,
        progress: Callable[[int, int], None] | None = None,
        callback_on_step_end: Callable[[int, int, torch.Tensor], None] | None = None,
    ) -> GenerationOutput:
        """Generate a talking video.

        Arrays or file paths. reference_video: uint8 (F, H, W, 3) or one image (H, W, 3) for a model
        trained on image references, or a video whose audio becomes the reference audio unless
        `reference_audio` is given (ignored by image-reference models); target_background: uint8 image (H, W, 3) or video
        (F, H, W, 3), looped when shorter than the output; driving_audio / reference_audio:
        float32 (N,) at `audio_rate`; background_mask: bool (H, W) or (F, H, W), True where the
        person goes (computed when None). Frames of any size: a reference is cropped around its face, a
        background around its person (or its centre) as `tavr ingest` crops, and the generated crop is
        put back into the background, scaled to at most `max_output_side`. Returns frames (F, H, W, 3)
        with F = the audio's length in frames and the background's (H, W) up to that limit; writes an
        mp4 with the driving audio when `out_path` is given. `progress(done, total)` counts denoising
        steps over all chunks; `callback_on_step_end(chunk, step, latent)` sees each chunk's latent
        (1, C, F', h, w) after each of its steps (read only).

        The stages, as diffusers splits a pipeline: check_inputs (files read, frames cropped),
        encode_conditions (prompt, reference and its audio), prepare_background (looped, person
        masked), denoise (chunk by chunk), finish (cut, pasted back, written).
        """
        start = time.perf_counter()
        cfg = self.config
        steps = cfg.steps if num_steps is None else int(num_steps)
        keep_ratio = cfg.keep_ratio if keep_ratio is None else float(keep_ratio)
        guidance = (cfg.reference_guidance if reference_guidance is None else reference_guidance,
                    cfg.audio_guidance if audio_guidance is None else audio_guidance)  # fmt: skip
        x = self.check_inputs(reference_video, target_background, driving_audio, reference_audio, background_mask, steps,
                              keep_ratio, out_path)  # fmt: skip
        text, ref_latent, ref_audio = self.encode_conditions(prompt, x.reference, x.reference_audio)
        bg, mask = self.prepare_background(x.background, x.mask, x.reference, x.total)
        frames, latents = self.denoise(text, ref_latent, ref_audio, bg, mask, x.driving_audio, x.total, steps, guidance,
                                       keep_ratio, seed, progress, callback_on_step_end)  # fmt: skip
        video, audio_out, path = self.finish(frames, x, out_path)
        return GenerationOutput(video, cfg.fps, audio_out, cfg.audio_rate, time.perf_counter() - start, path, latents)

    def check_inputs(self, reference_video, target_background, driving_audio, reference_audio, background_mask,
                     steps: int, keep_ratio: float, out_path) -> Inputs:  # fmt: skip
        """Every check before compute: files read (tavr.data.video, bounded), sizes, lengths, finite audio;
        real footage cropped as `tavr ingest` crops (see _frame). A bad input is a ValueError naming it."""
        cfg = self.config
        if steps < 1:
            raise ValueError(f"num_steps must be at least 1; got {steps}")
        if not 0 < keep_ratio <= 1:
            raise ValueError(f"keep_ratio must be in (0, 1]; got {keep_ratio}")
        if out_path is not None:
            from tavr.data.video import check_writable

            check_writable(out_path)  # before the compute, not after it
        reference_video, reference_audio, target_background, driving_audio = self._load(
            reference_video, reference_audio, target_background, driving_audio
        )
        reference_video = reference_video[None] if reference_video.ndim == 3 else reference_video  # one image
        self._check_frames("reference video", reference_video)
        n_ref = reference_length(len(reference_video), cfg.reference_frames)
        if n_ref < cfg.min_reference_frames:
            raise ValueError(f"reference video has {len(reference_video)} frames; at least {cfg.min_reference_frames} are needed")
        background = np.asarray(target_background)
        background = background[None] if background.ndim == 3 else background
        self._check_frames("target background", background)
        driving_audio = np.asarray(driving_audio, dtype=np.float32).reshape(-1)
        if not np.isfinite(driving_audio).all():
            raise ValueError(f"driving audio has {int((~np.isfinite(driving_audio)).sum())} samples that are NaN or infinite")
        if reference_audio is not None and not np.isfinite(np.asarray(reference_audio, dtype=np.float32)).all():
            raise ValueError("reference audio has samples that are NaN or infinite")
        total = int(round(len(driving_audio) / cfg.audio_rate * cfg.fps))
        if total < 1:
            raise ValueError(f"driving audio is empty ({len(driving_audio)} samples); at least one frame's worth is needed")
        if (cfg.chunk_frames - 1) % 4:
            raise ValueError(f"chunk_frames must be 4k + 1; got {cfg.chunk_frames}")
        # real footage: face crops in, the generated crop back into the full background at the end
        reference, background, mask, full, where = self._frame(reference_video[:n_ref], background, background_mask)
        return Inputs(reference, reference_audio, background, mask, driving_audio, total, full, where)

    def encode_conditions(self, prompt: str, reference: np.ndarray, reference_audio) -> tuple:
        """(text (1, L, text_dim), reference latent (1, C, F', h, w), reference audio windows or None)."""
        cfg = self.config
        text, _ = self.text_encoder([prompt])
        ref_latent = self.encode_video(reference)
        ref_audio = None
        if cfg.reference_audio and (reference_audio is None or not len(reference_audio)):
            warnings.warn("the reference has no audio track: generating without reference audio "
                          "(give reference_audio to condition on the person's own voice)")  # fmt: skip
        if cfg.reference_audio and reference_audio is not None and len(reference_audio):
            seg = torch.from_numpy(np.asarray(reference_audio, dtype=np.float32).reshape(1, -1))
            ref_audio = self.audio_encoder(seg, len(reference), cfg.fps).to(self.device)
        return text.to(self.device), ref_latent, ref_audio

    def prepare_background(self, background: np.ndarray, mask: np.ndarray | None, reference: np.ndarray,
                           total: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """The background looped over the output plus one chunk (F, H, W, 3), and where the person goes
        (F, H, W) bool: the given mask, else the person found in it (background_mask)."""
        index = np.arange(total + self.config.chunk_frames) % len(background)
        bg = background[index]
        if mask is None:
            return bg, self.background_mask(background, reference)[index]
        mask = np.asarray(mask, dtype=bool)
        return bg, np.broadcast_to(mask[None] if mask.ndim == 2 else mask[index % len(mask)], bg.shape[:3])

    def denoise(self, text, ref_latent, ref_audio, bg, mask, driving_audio, total, steps, guidance, keep_ratio, seed,
                progress=None, callback_on_step_end=None) -> tuple[list[np.ndarray], list[torch.Tensor]]:  # fmt: skip
        """Chunk by chunk -> (decoded frames per chunk, latents per chunk). Chunks overlap by one frame: a
        later chunk's first frame is the previous chunk's last, its latent pinned to that frame's encoding
        during sampling (latent frame 0 of the causal VAE encodes frame 0 alone), and the last
        `motion_frames` latent frames of the previous chunk enter as motion tokens. The person's cells
        of the background are zeroed in latent space."""
        cfg = self.config
        ref_scale, audio_scale = guidance
        chunk = cfg.chunk_frames
        scheduler = flow.make_sampler(cfg.sampler, cfg.shift)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        stride = chunk - 1
        n_chunks = 1 + max(0, math.ceil((total - chunk) / stride))
        frames, latents, motion, seam = [], [], None, None
        per_chunk_samples = int(round(chunk / cfg.fps * cfg.audio_rate))
        for k in range(n_chunks):
            lo = k * stride
            a0 = int(round(lo / cfg.fps * cfg.audio_rate))
            audio = driving_audio[a0 : a0 + per_chunk_samples]
            audio = torch.from_numpy(np.pad(audio, (0, per_chunk_samples - len(audio))))[None]
            audio_windows = self.audio_encoder(audio, chunk, cfg.fps).to(self.device)
            mask_latent = mask_to_latent(mask[lo : lo + chunk]).to(self.device)
            bg_latent = masked_background(self.encode_video(bg[lo : lo + chunk]), mask_latent)
            noise = torch.randn(bg_latent.shape, generator=generator).to(self.device)

            def velocity(x, t):
                def run(use_reference: bool, use_audio: bool) -> torch.Tensor:
                    return self.transformer(
                        x, t, text, background=bg_latent, background_mask=mask_latent,
                        reference=ref_latent if use_reference else None, motion=motion,
                        audio=audio_windows if use_audio else None,
                        reference_audio=ref_audio if use_audio and use_reference else None,
                        keep_ratio=keep_ratio,
                    )  # fmt: skip

                return flow.guided_velocity(run, ref_scale, audio_scale, cfg.guidance_order)

            def step_done(i: int, n: int, x: torch.Tensor) -> None:
                if callback_on_step_end:
                    callback_on_step_end(k, i, x)
                if progress:
                    progress(k * steps + i, n_chunks * steps)

            pin = None
            if seam is not None:
                known = seam

                def pin(x: torch.Tensor, sigma: float) -> torch.Tensor:  # keep frame 0 on the seam frame's path
                    x = x.clone()
                    x[:, :, :1] = flow.interpolate(known, noise[:, :, :1], torch.tensor([sigma]))
                    return x

            latent = flow.sample(velocity, noise, steps, scheduler, callback=step_done, constraint=pin)
            motion = latent[:, :, -cfg.motion_frames :] if cfg.motion_frames > 0 else None
            decoded = to_frames(self.vae.decode(latent))
            frames.append(decoded if k == 0 else decoded[1:])
            latents.append(latent)
            if k + 1 < n_chunks:  # the next chunk starts on this chunk's last frame
                seam = self.encode_video(decoded[-1:])
        return frames, latents

    def finish(self, frames: list[np.ndarray], x: Inputs, out_path) -> tuple[np.ndarray, np.ndarray, Path | None]:
        """Chunks -> (video cut to the audio's length and pasted back into a full-size background,
        the driving audio cut or padded to it, the mp4 written when out_path is given)."""
        cfg = self.config
        video = np.concatenate(frames)[: x.total]
        if x.full_background is not None:
            from tavr.data.framing import paste

            video = paste(x.full_background[np.arange(x.total) % len(x.full_background)], video, x.where)
        samples = int(round(x.total / cfg.fps * cfg.audio_rate))
        audio_out = np.pad(x.driving_audio[:samples], (0, max(0, samples - len(x.driving_audio))))
        path = None
        if out_path is not None:
            from tavr.data.video import write_video

            path = Path(out_path)
            write_video(path, video, cfg.fps, audio_out, cfg.audio_rate)
        return video, audio_out, path
