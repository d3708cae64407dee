"""Benchmark metrics: one generated video scored against its pair's inputs.

    identity         cosine of the mean dlib ResNet embedding of `identity_frames` evenly sampled
                     generated frames and as many reference frames (tavr.rl.rewards); 0 without a face
    lipsync          Pearson correlation of mouth opening (dlib landmarks, every frame) with the
                     driving audio's RMS envelope, at the best offset in +-max_offset frames
                     (in the spirit of LSE-C); 0 with fewer than 3 faces
    lipsync_offset   that offset in frames, positive when the mouth follows the audio (LSE-D's
                     counterpart: a well-synced video has 0); None with fewer than 3 faces
    bg_psnr, bg_ssim outside the person mask: generated frames against the target background
                     (PSNR in dB over every outside pixel, capped at 100 for identical pixels;
                     SSIM's 7x7 map averaged where the window holds no person pixel)
    stability        mean absolute change between consecutive frames inside the face box,
                     0-255 scale (lower is steadier); None with fewer than 2 consecutive faces
    face_rate        share of frames in which dlib finds a face
    fid, fvd         None: computed only from locally supplied weights, never estimated

Inputs are uint8 frames (F, H, W, 3); masks are bool (F, H, W), True on the person.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter
from skimage.metrics import structural_similarity

from tavr.rl.rewards import face_track, identity_reward, lipsync_score

PSNR_CAP = 100.0
SSIM_WINDOW = 7  # skimage's default window; SSIM is averaged where the window is clear of the person
NOT_COMPUTED = {"fid": None, "fvd": None}


def _frames(name: str, video: np.ndarray) -> np.ndarray:
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8 or len(video) == 0:
        raise ValueError(f"{name} must be uint8 frames (F, H, W, 3); got {video.dtype} {video.shape}")
    return video


def identity(generated: np.ndarray, reference: np.ndarray, frames: int = 4) -> tuple[float, int]:
    """(the identity reward of `generated` against `reference`, generated frames with a face among the sampled)."""
    generated, reference = _frames("generated", generated), _frames("reference", reference)
    scores, info = identity_reward(frames)([generated], {"reference_frames": [reference]})
    return float(scores[0]), int(info["faces"][0])


def lipsync(mouth: np.ndarray, audio: np.ndarray, rate: int, fps: float, max_offset: int = 3) -> tuple[float, int | None]:
    """(correlation at the best offset, the offset) from a mouth track (F,) with NaN where no face:
    the lip-sync reward's own computation (tavr.rl.rewards.lipsync_score)."""
    return lipsync_score(mouth, audio, rate, fps, max_offset)


def background(generated: np.ndarray, target: np.ndarray, person: np.ndarray) -> tuple[float, float]:
    """(PSNR dB, SSIM) of generated vs target frames over pixels outside the person mask.

    The target and mask may be shorter than the generated video; they are looped, as the
    pipeline loops a background.
    """
    generated, target = _frames("generated", generated), _frames("target background", target)
    person = np.asarray(person, dtype=bool)
    if target.shape[1:] != generated.shape[1:] or person.shape[1:] != generated.shape[1:3]:
        raise ValueError(f"sizes differ: generated {generated.shape}, target {target.shape}, mask {person.shape}")
    idx = np.arange(len(generated))
    target, outside = target[idx % len(target)], ~person[idx % len(person)]
    if not outside.any():
        raise ValueError("the person mask covers every pixel: no background to compare")
    diff = generated.astype(np.float64) - target.astype(np.float64)
    mse = float((diff**2)[outside].mean())
    psnr = PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * np.log10(255.0**2 / mse))
    ssim = []
    for g, t, p in zip(generated, target, person[idx % len(person)]):
        clear = ~maximum_filter(p, size=SSIM_WINDOW)  # pixels whose SSIM window holds no person
        if clear.any():
            _, smap = structural_similarity(g, t, channel_axis=-1, data_range=255, win_size=SSIM_WINDOW, full=True)
            ssim.append(float(smap.mean(axis=-1)[clear].mean()))
    return float(psnr), (float(np.mean(ssim)) if ssim else float("nan"))


def stability(video: np.ndarray, boxes: np.ndarray) -> float | None:
    """Mean |frame[t + 1] - frame[t]| inside frame t's face box, over pairs where both have a face."""
    video = _frames("generated", video).astype(np.float32)
    h, w = video.shape[1:3]
    changes = []
    for t in range(len(video) - 1):
        if np.isnan(boxes[t]).any() or np.isnan(boxes[t + 1]).any():
            continue
        x0, y0 = max(0, int(np.floor(boxes[t, 0]))), max(0, int(np.floor(boxes[t, 1])))
        x1, y1 = min(w, int(np.ceil(boxes[t, 2]))), min(h, int(np.ceil(boxes[t, 3])))
        if x1 > x0 and y1 > y0:
            changes.append(float(np.abs(video[t + 1, y0:y1, x0:x1] - video[t, y0:y1, x0:x1]).mean()))
    return float(np.mean(changes)) if changes else None


def score_video(generated, reference, target_background, person_mask, audio, audio_rate: int, fps: float,
                identity_frames: int = 4, max_offset: int = 3) -> dict:
    """Every metric above for one generated video; one face-tracking pass serves lip sync,
    stability and face rate."""
    generated = _frames("generated", generated)
    boxes, mouth = face_track(generated)
    ident, _ = identity(generated, reference, identity_frames)
    sync, offset = lipsync(mouth, np.asarray(audio, dtype=np.float32), audio_rate, fps, max_offset)
    psnr, ssim = background(generated, target_background, person_mask)
    return {
        "identity": ident, "lipsync": sync, "lipsync_offset": offset, "bg_psnr": psnr, "bg_ssim": ssim,
        "stability": stability(generated, boxes), "face_rate": float((~np.isnan(mouth)).mean()), **NOT_COMPUTED,
    }  # fmt: skip
