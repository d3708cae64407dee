"""Protocol (b) of the image-reference baseline: the reference frame adapted to the target scene.

    adapt_reference(frame, person, target, target_person) -> uint8 (H, W, 3)

An image-reference model is usually given a portrait taken in the scene it must render. Across
scenes that portrait does not exist, so this protocol builds the closest thing from what a
method may see: the reference frame's person, moved into the target frame.

1. fill     the target person's pixels are replaced from the nearest background pixels and
            smoothed, so nothing of the target person (the answer) reaches the input;
2. place    the reference person is scaled to the target person's height and centred on the
            target person's box (bilinear image, nearest mask);
3. colour   the person's pixels get a Reinhard transfer in Lab: the per-channel mean and std of
            the reference's background are mapped to the target background's, i.e. the change
            of scene lighting is applied to the person. Background statistics mix lighting with
            scene content, so the transfer is applied at half strength with bounded gains;
4. paste    the placed person over the filled target.

Frames are uint8 (H, W, 3); masks are bool (H, W), True on the person.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.color import lab2rgb, rgb2lab

STRENGTH = 0.5  # share of the full colour transfer applied
MAX_GAIN = 1.5  # bound on the per-channel std ratio


def _box(mask: np.ndarray) -> tuple[float, float, float]:
    """(centre row, centre column, height) of the mask's bounding box."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2, float(rows[-1] - rows[0] + 1)


def fill(frame: np.ndarray, hole: np.ndarray, blur: float = 2.0) -> np.ndarray:
    """`frame` with the `hole` pixels taken from the nearest pixel outside it, then blurred inside."""
    if not hole.any():
        return frame.copy()
    _, (iy, ix) = ndimage.distance_transform_edt(hole, return_indices=True)
    out = frame[iy, ix].astype(np.float32)
    smooth = np.stack([ndimage.gaussian_filter(out[..., c], blur) for c in range(3)], axis=-1)
    out[hole] = smooth[hole]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def place(frame: np.ndarray, person: np.ndarray, target_person: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frame, mask) moved so the person's box has the target person's height and centre."""
    (ry, rx, rh), (ty, tx, th) = _box(person), _box(target_person)
    scale = th / rh
    # output pixel p comes from input pixel (p - target centre) / scale + reference centre
    matrix = np.diag([1 / scale, 1 / scale])
    offset = np.array([ry - ty / scale, rx - tx / scale])
    image = np.stack([ndimage.affine_transform(frame[..., c].astype(np.float32), matrix, offset, order=1, mode="nearest")
                      for c in range(3)], axis=-1)  # fmt: skip
    mask = ndimage.affine_transform(person.astype(np.uint8), matrix, offset, order=0, mode="constant", cval=0) > 0
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def match_colour(pixels: np.ndarray, source_bg: np.ndarray, target_bg: np.ndarray, strength: float = STRENGTH) -> np.ndarray:
    """Reinhard transfer of `pixels` (N, 3) uint8: Lab statistics of source_bg (M, 3) mapped to target_bg's,
    applied with `strength` (0 = unchanged, 1 = full) and the per-channel gain kept within MAX_GAIN."""
    lab = [rgb2lab(x.reshape(-1, 1, 3).astype(np.float64) / 255.0).reshape(-1, 3) for x in (pixels, source_bg, target_bg)]
    px, src, tgt = lab
    gain = np.clip(tgt.std(axis=0) / np.maximum(src.std(axis=0), 1e-3), 1 / MAX_GAIN, MAX_GAIN)
    full = (px - src.mean(axis=0)) * gain + tgt.mean(axis=0)
    moved = px + strength * (full - px)
    rgb = lab2rgb(moved.reshape(-1, 1, 3)).reshape(-1, 3)
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def adapt_reference(frame: np.ndarray, person: np.ndarray, target: np.ndarray, target_person: np.ndarray) -> np.ndarray:
    """The reference frame's person in the target frame (see the module text)."""
    frame, target = np.asarray(frame), np.asarray(target)
    person, target_person = np.asarray(person, dtype=bool), np.asarray(target_person, dtype=bool)
    if frame.shape != target.shape or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"frames must be (H, W, 3) of one size; got {frame.shape} and {target.shape}")
    if person.shape != frame.shape[:2] or target_person.shape != target.shape[:2]:
        raise ValueError(f"masks must be (H, W); got {person.shape} and {target_person.shape}")
    for name, m in (("reference", person), ("target", target_person)):
        if not m.any() or m.all():
            raise ValueError(f"the {name} person mask must cover some but not all pixels")
    out = fill(target, target_person)
    moved, mask = place(frame, person, target_person)
    if mask.any():
        out[mask] = match_colour(moved[mask], frame[~person], target[~target_person])
    return out
