"""Scenes for TAVR-Synth: background, colour, lighting and framing.

Backgrounds come from four sources: photographs bundled with scikit-image
(read from its package folder, no download), procedural textures, gradients,
and simple rooms. Photos with people in them (astronaut, camera) are left out
so the only face in a frame is the synthetic one.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = (
    "coffee.png", "chelsea.png", "rocket.jpg", "brick.png", "grass.png", "gravel.png",
    "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png", "retina.jpg", "page.png",
    "color.png", "coins.png", "moon.png",
)  # fmt: skip
KINDS = ("texture", "gradient", "room")


@dataclass(frozen=True)
class Scene:
    kind: str  # photo | texture | gradient | room
    source: str  # photo file or pattern name
    seed: int
    tint: tuple[float, float, float]  # colour cast of the light
    brightness: float
    light_angle: float  # radians, direction the key light comes from
    light_strength: float
    face_scale: float  # framing: head size relative to the default
    offset: tuple[float, float]  # framing: head centre shift, share of frame side

    def attributes(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def sample_scene(rng: np.random.Generator, photo: bool) -> Scene:
    kind = "photo" if photo else str(rng.choice(KINDS))
    source = {
        "photo": str(rng.choice(PHOTOS)),
        "texture": str(rng.choice(("stripes", "checker", "noise", "dots"))),
        "gradient": str(rng.choice(("linear", "radial"))),
        "room": str(rng.choice(("window", "shelf", "door"))),
    }[kind]
    warm = rng.uniform(-1, 1)
    return Scene(
        kind=kind,
        source=source,
        seed=int(rng.integers(2**31)),
        tint=tuple(np.round(np.array([1 + 0.12 * warm, 1.0, 1 - 0.12 * warm]), 4).tolist()),
        brightness=float(rng.uniform(0.8, 1.1)),
        light_angle=float(rng.uniform(0, 2 * np.pi)),
        light_strength=float(rng.uniform(0.0, 0.25)),
        face_scale=float(rng.uniform(0.9, 1.1)),
        offset=(float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-0.03, 0.06))),
    )


@functools.cache
def _photo(name: str) -> np.ndarray:
    spec = importlib.util.find_spec("skimage.data")
    if spec is None or spec.origin is None:
        raise RuntimeError("scikit-image is not installed; it ships the background photos")
    img = np.asarray(Image.open(Path(spec.origin).parent / name).convert("RGB"), dtype=np.float32) / 255
    return img


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return np.asarray(pil.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255


def background(scene: Scene, size: int) -> np.ndarray:
    """The scene's empty background, lit and tinted -> (size, size, 3) float 0..1."""
    rng = np.random.default_rng(scene.seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c1, c2 = rng.uniform(0.1, 0.95, 3), rng.uniform(0.1, 0.95, 3)
    if scene.kind == "photo":
        img = _photo(scene.source)
        h, w, _ = img.shape
        side = int(min(h, w) * rng.uniform(0.45, 0.9))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        bg = _resize(img[top : top + side, left : left + side], size)
        if np.allclose(bg[..., 0], bg[..., 1]):  # grey photo: colourise
            bg = bg[..., :1] * (0.5 * c1 + 0.5)
    elif scene.kind == "gradient":
        if scene.source == "linear":
            a = rng.uniform(0, 2 * np.pi)
            t = np.clip(0.5 + (x - 0.5) * np.cos(a) + (y - 0.5) * np.sin(a), 0, 1)
        else:
            t = np.clip(np.hypot(x - rng.uniform(0.2, 0.8), y - rng.uniform(0.2, 0.8)) * 1.4, 0, 1)
        bg = c1 * (1 - t[..., None]) + c2 * t[..., None]
    elif scene.kind == "texture":
        f = rng.uniform(4, 12)
        if scene.source == "stripes":
            t = 0.5 + 0.5 * np.sin(2 * np.pi * f * (x * np.cos(f) + y * np.sin(f)))
        elif scene.source == "checker":
            t = ((np.floor(x * f) + np.floor(y * f)) % 2).astype(np.float32)
        elif scene.source == "dots":
            t = (np.hypot((x * f) % 1 - 0.5, (y * f) % 1 - 0.5) < 0.25).astype(np.float32)
        else:
            grid = rng.uniform(0, 1, (int(f) + 1, int(f) + 1))
            t = _resize(np.repeat(grid[..., None], 3, axis=2), size)[..., 0]
        bg = c1 * (1 - 0.6 * t[..., None]) + c2 * 0.6 * t[..., None]
    else:  # room: wall, floor line, one framed rectangle
        bg = np.broadcast_to(c1 * 0.9, (size, size, 3)).copy()
        floor = y > rng.uniform(0.75, 0.9)
        bg[floor] = c2 * 0.6
        x0, y0 = rng.uniform(0.05, 0.55), rng.uniform(0.05, 0.35)
        ww, hh = rng.uniform(0.2, 0.4), rng.uniform(0.25, 0.5)
        inside = (x > x0) & (x < x0 + ww) & (y > y0) & (y < y0 + hh)
        frame = (x > x0 - 0.02) & (x < x0 + ww + 0.02) & (y > y0 - 0.02) & (y < y0 + hh + 0.02)
        bg[frame] = 0.25 * c2
        fill = {"window": np.array([0.75, 0.85, 0.95]), "shelf": c2, "door": c2 * 0.5}[scene.source]
        bg[inside] = fill
    return np.clip(bg, 0, 1).astype(np.float32)


def light(frame: np.ndarray, scene: Scene) -> np.ndarray:
    """Apply the scene's key light, tint and brightness to a whole frame (H, W, 3)."""
    size = frame.shape[0]
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    ramp = 1 + scene.light_strength * (x * np.cos(scene.light_angle) + y * np.sin(scene.light_angle)) * 2
    out = frame * ramp[..., None] * np.asarray(scene.tint, dtype=np.float32) * scene.brightness
    return np.clip(out, 0, 1)
