"""Real footage in and out of the model's square face crop.

The model works on `size` x `size` face-centred clips, the crop `tavr ingest` makes. A user's
reference or background is any video or photo: 512x512, 1080p, a phone's portrait frame. Here

    reference   -> the face is tracked (tavr.data.ingest.track_faces) and the ingest crop around it
                   (margin, upward shift) is resized to size x size
    background  -> the same crop around the person it shows, or, with nobody in it, the largest
                   centred square; generation runs on that crop and `paste` puts the generated
                   crop back into the full background at its place and size

`Framing` records where the crop sits. Frames that already are size x size pass through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tavr.config import IngestConfig


DETECT_MAX_SIDE = 640  # shorter side real frames are searched for faces at


@dataclass(frozen=True)
class Framing:
    """A square crop (x0, y0, side) of frames height x width; `whole` when it is the frame itself."""

    x0: int
    y0: int
    side: int
    height: int
    width: int

    @property
    def whole(self) -> bool:
        return self.x0 == 0 and self.y0 == 0 and self.side == self.height == self.width


def face_sample(frames: np.ndarray, count: int = 8) -> np.ndarray:
    """About `count` evenly spaced frames of (F, H, W, 3): what is searched for the person's face."""
    return frames[:: max(1, len(frames) // count)]


def face_framing(frames: np.ndarray, cfg: IngestConfig, required: bool, what: str) -> Framing:
    """The ingest crop around the face in frames (F, H, W, 3) (about 8 of them are searched).

    Without a face: the largest centred square, or a ValueError when `required` (a reference must
    show its person)."""
    from tavr.data.ingest import crop_box, track_faces

    _, h, w, _ = frames.shape
    # HOG finds faces from about 80 px: a face crop is searched at ingest's side, a wide frame nearer its own
    boxes, found = track_faces(face_sample(frames), max(cfg.detect_side, min(h, w, DETECT_MAX_SIDE)))
    if not found.any():
        if required:
            raise ValueError(f"no face found in the {what} ({w}x{h}): it must show the person's face")
        side = min(h, w)
        return Framing((w - side) // 2, (h - side) // 2, side, h, w)
    x0, y0, side = crop_box(boxes, found, h, w, cfg)
    return Framing(x0, y0, side, h, w)


def crop(frames: np.ndarray, framing: Framing, size: int, resample=Image.BILINEAR) -> np.ndarray:
    """(F, H, W, ...) frames or masks -> (F, size, size, ...): the framing's square, resized."""
    x0, y0, s = framing.x0, framing.y0, framing.side
    part = frames[:, y0 : y0 + s, x0 : x0 + s]
    if part.shape[1:3] == (size, size):
        return np.ascontiguousarray(part)
    if part.dtype == bool:
        return np.stack([np.asarray(Image.fromarray(p).resize((size, size), Image.NEAREST)) for p in part])
    return np.stack([np.asarray(Image.fromarray(p).resize((size, size), resample)) for p in part])


def paste(background: np.ndarray, generated: np.ndarray, framing: Framing) -> np.ndarray:
    """Generated crops (F, size, size, 3) put back into background frames (F, H, W, 3) at the framing."""
    if framing.whole and generated.shape[1:3] == background.shape[1:3]:
        return generated
    out = np.array(background, copy=True)
    s = framing.side
    for i, g in enumerate(generated):
        patch = g if g.shape[:2] == (s, s) else np.asarray(Image.fromarray(g).resize((s, s), Image.BICUBIC))
        out[i, framing.y0 : framing.y0 + s, framing.x0 : framing.x0 + s] = patch
    return out


def resize_masks(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bool masks (F, h, w) -> (F, height, width), nearest neighbour."""
    if masks.shape[1:3] == (height, width):
        return masks
    return np.stack([np.asarray(Image.fromarray(m).resize((width, height), Image.NEAREST)) for m in masks])


def limit_side(frames: np.ndarray, max_side: int) -> np.ndarray:
    """Frames (F, H, W, 3) scaled down so the longer side is at most `max_side` (never up)."""
    _, h, w, _ = frames.shape
    if max(h, w) <= max_side:
        return frames
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])
