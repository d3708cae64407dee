"""Parametric faces for TAVR-Synth, drawn with soft-edged shapes in numpy.

A face lives in its own units: origin at the face centre, u to the right, v
down, 1 unit = half the face height. `draw_person` maps every pixel into that
frame (head position, scale, tilt), paints layers back to front and returns
the frame and the person mask. Shapes have 1-pixel soft edges, so frames need
no supersampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SKIN = np.array(
    [(255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 140, 100), (176, 120, 84), (158, 108, 74), (142, 96, 66)],
    dtype=np.float32,
) / 255
HAIR = np.array(
    [(20, 16, 14), (60, 40, 28), (110, 72, 40), (170, 130, 80), (220, 190, 130), (150, 50, 30), (120, 120, 125)],
    dtype=np.float32,
) / 255
IRIS = np.array([(60, 40, 25), (40, 90, 140), (70, 110, 60), (100, 80, 50), (30, 30, 30)], dtype=np.float32) / 255
HAIR_STYLES = ("short", "long", "bald", "bun", "curly", "side")
ACCESSORIES = ("none", "glasses", "earrings", "moustache", "beard", "none")


@dataclass(frozen=True)
class Identity:
    """The attributes that make one person look like themselves."""

    face_width: float  # half-width in face units (shape)
    jaw: float  # how much the lower face narrows (shape)
    skin: tuple[float, float, float]
    eye_size: float
    eye_spacing: float
    iris: tuple[float, float, float]
    brow_thickness: float
    brow_tilt: float
    hair_style: str
    hair: tuple[float, float, float]
    nose_length: float
    nose_width: float
    mouth_width: float
    lip: tuple[float, float, float]
    accessory: str
    shirt: tuple[float, float, float]
    pitch: float  # voice, Hz

    def attributes(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _measure(rng: np.random.Generator, lo: float, hi: float, shift: float) -> float:
    """A uniform draw from [lo, hi]; with `shift` > 0 from just outside it instead: within shift x its
    width below lo or above hi (a side at random), values no training identity has."""
    if shift <= 0:
        return float(rng.uniform(lo, hi))
    width = (hi - lo) * shift
    return float(rng.uniform(lo - width, lo) if rng.random() < 0.5 else rng.uniform(hi, hi + width))


def sample_identity(rng: np.random.Generator, shift: float = 0.0) -> Identity:
    """A random person; `shift` > 0 draws every face measure and the voice outside the training ranges."""
    skin = SKIN[rng.integers(len(SKIN))] * rng.uniform(0.95, 1.05, 3)
    lip = np.clip(skin * np.array([0.85, 0.55, 0.55]) + rng.uniform(-0.05, 0.05, 3), 0, 1)
    return Identity(
        face_width=_measure(rng, 0.66, 0.82, shift),
        jaw=_measure(rng, 0.15, 0.45, shift),
        skin=tuple(np.clip(skin, 0, 1).round(4).tolist()),
        eye_size=_measure(rng, 0.85, 1.2, shift),
        eye_spacing=_measure(rng, 0.28, 0.36, shift),
        iris=tuple(IRIS[rng.integers(len(IRIS))].round(4).tolist()),
        brow_thickness=_measure(rng, 0.035, 0.07, shift),
        brow_tilt=_measure(rng, -0.25, 0.25, shift),
        hair_style=str(rng.choice(HAIR_STYLES)),
        hair=tuple(HAIR[rng.integers(len(HAIR))].round(4).tolist()),
        nose_length=_measure(rng, 0.85, 1.2, shift),
        nose_width=_measure(rng, 0.8, 1.3, shift),
        mouth_width=_measure(rng, 0.2, 0.28, shift),
        lip=tuple(lip.round(4).tolist()),
        accessory=str(rng.choice(ACCESSORIES)),
        shirt=tuple(rng.uniform(0.05, 0.95, 3).round(4).tolist()),
        pitch=_measure(rng, 95, 230, shift),
    )


@dataclass(frozen=True)
class Pose:
    """Per-frame state: where the head is and what the face is doing."""

    cx: float  # head centre, pixels
    cy: float
    scale: float  # pixels per face unit
    tilt: float  # radians
    mouth: float  # 0 closed .. 1 wide open
    eyes: float  # 1 open .. 0 closed (blink)


def _ellipse(u, v, cu, cv, a, b, px):
    """Soft coverage (0..1) of an axis-aligned ellipse; `px` = pixels per unit."""
    d = (np.sqrt(((u - cu) / a) ** 2 + ((v - cv) / b) ** 2) - 1.0) * min(a, b) * px
    return np.clip(0.5 - d, 0.0, 1.0)


def _paint(canvas, alpha, color):
    """Blend `color` (3,) or (H, W, 3) into `canvas` by `alpha`, only inside alpha's bounding box."""
    rows = np.flatnonzero(alpha.max(axis=1) > 0)
    if len(rows) == 0:
        return
    cols = np.flatnonzero(alpha.max(axis=0) > 0)
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    color = np.asarray(color, dtype=np.float32)
    a = alpha[box][..., None]
    canvas[box] += a * ((color[box] if color.ndim == 3 else color) - canvas[box])


def draw_person(ident: Identity, pose: Pose, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paint the person over `background` (H, W, 3) float 0..1.

    Returns (frame (H, W, 3) float 0..1, person mask (H, W) bool).
    """
    h, w, _ = background.shape
    px = pose.scale
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c, s = np.cos(pose.tilt), np.sin(pose.tilt)
    dx, dy = (x - pose.cx) / px, (y - pose.cy) / px
    u, v = c * dx + s * dy, -s * dx + c * dy  # (H, W) face units
    canvas = background.astype(np.float32).copy()
    skin = np.asarray(ident.skin, dtype=np.float32)
    hair = np.asarray(ident.hair, dtype=np.float32)
    fw, style = ident.face_width, ident.hair_style
    person = np.zeros((h, w), dtype=np.float32)

    def layer(alpha, color):
        nonlocal person
        _paint(canvas, alpha, color)
        person = np.maximum(person, alpha)

    # back hair, shoulders and neck
    if style in ("long", "side"):
        back = _ellipse(u, v, 0.0, 0.15, fw + 0.3, 1.25, px) * (v < 1.2)
        layer(back, hair * 0.85)
    shoulders = _ellipse(u, v, 0.0, 2.25, 1.9, 1.0, px)
    shade = np.clip(1.0 - 0.25 * np.abs(u) / 1.9, 0.6, 1.0)[..., None]
    layer(shoulders, np.asarray(ident.shirt, dtype=np.float32) * shade)
    neck = np.clip(0.5 - (np.abs(u) - 0.3) * px, 0, 1) * np.clip(0.5 - (0.55 - v) * px, 0, 1) * (v < 1.6)
    layer(neck, skin * 0.78)
    # ears, then the face oval narrowing towards a chin that drops as the mouth opens
    for side in (-1, 1):
        layer(_ellipse(u, v, side * fw * 0.98, -0.05, 0.1, 0.2, px), skin * 0.85)
    drop = 0.1 * pose.mouth
    vv = np.where(v > 0.3, (v - 0.3) / (1 + drop / 0.7) + 0.3, v)
    width = fw * (1 - ident.jaw * np.clip(vv, 0, 1) ** 2)
    face = np.clip(0.5 - (np.sqrt((u / width) ** 2 + vv**2) - 1.0) * fw * px, 0, 1)
    light = np.clip(1.05 - 0.22 * (u / fw) ** 2 - 0.12 * np.clip(vv, 0, None) ** 2, 0.6, 1.1)[..., None]
    layer(face, skin * light)
    for cu, cv, a, b in ((0.0, -0.6, 0.4, 0.2), (-0.4, 0.15, 0.16, 0.12), (0.4, 0.15, 0.16, 0.12), (0.0, -0.02, 0.05, 0.18)):
        _paint(canvas, 0.45 * face * _ellipse(u, v, cu, cv, a, b, px), np.minimum(skin * 1.3, 1.0))
    canvas[..., :] *= 1 - 0.12 * _ellipse(u, v, 0.0, 0.85 + drop, 0.3, 0.12, px)[..., None]  # under-lip shadow

    # eyes: socket shadow, sclera, iris, pupil, upper lid; a blink closes them
    for side in (-1, 1):
        ex, ey = side * ident.eye_spacing, -0.15
        ea, eb = 0.12 * ident.eye_size, 0.065 * ident.eye_size
        _paint(canvas, 0.2 * _ellipse(u, v, ex, ey - 0.02, ea * 1.5, eb * 2.0, px), skin * 0.6)
        open_b = max(eb * pose.eyes, 1e-3)
        eye = _ellipse(u, v, ex, ey, ea, open_b, px)
        _paint(canvas, eye, (0.95, 0.95, 0.93))
        _paint(canvas, eye * _ellipse(u, v, ex, ey, 0.055 * ident.eye_size, 0.055 * ident.eye_size, px), ident.iris)
        _paint(canvas, eye * _ellipse(u, v, ex, ey, 0.025, 0.025, px), (0.03, 0.03, 0.03))
        lid = _ellipse(u, v, ex, ey - open_b * 0.9, ea * 1.05, 0.022, px)
        _paint(canvas, lid, (0.12, 0.08, 0.07))
        # brows: thin arches
        du = u - ex
        arch = -0.36 + 0.9 * du**2 - side * ident.brow_tilt * du
        band = np.clip(0.5 - (np.abs(v - arch) - ident.brow_thickness / 2) * px, 0, 1)
        brow = band * np.clip(0.5 - (np.abs(du) - 0.17) * px, 0, 1)
        _paint(canvas, brow, np.minimum(hair, skin * 0.45) * 0.8)
    # nose: side shading, tip, nostrils
    nl, nw = ident.nose_length, ident.nose_width
    for side in (-1, 1):
        _paint(canvas, 0.45 * _ellipse(u, v, side * 0.075 * nw, 0.08 * nl, 0.035, 0.2 * nl, px), skin * 0.6)
        _paint(canvas, 0.9 * _ellipse(u, v, side * 0.06 * nw, 0.27 * nl, 0.035 * nw, 0.022, px), skin * 0.3)
    _paint(canvas, 0.5 * _ellipse(u, v, 0.0, 0.2 * nl, 0.07 * nw, 0.06, px), skin * 1.12)
    # mouth: lips, a dark opening that grows with the mouth, upper teeth
    mw, my = ident.mouth_width, 0.52 + 0.5 * drop
    gap = 0.02 + 0.16 * pose.mouth
    lips = _ellipse(u, v, 0.0, my + gap / 2, mw, gap / 2 + 0.07, px)
    _paint(canvas, lips, ident.lip)
    inner = _ellipse(u, v, 0.0, my + gap / 2, mw * 0.8, gap / 2, px)
    _paint(canvas, inner, (0.12, 0.03, 0.04))
    teeth = inner * _ellipse(u, v, 0.0, my + 0.01, mw * 0.6, 0.035, px) * (pose.mouth > 0.2)
    _paint(canvas, teeth, (0.92, 0.9, 0.85))
    _paint(canvas, _ellipse(u, v, 0.0, my + gap / 2, mw * 0.85, 0.012, px), np.asarray(ident.lip, dtype=np.float32) * 0.55)

    # front hair and accessories
    if style != "bald":
        top = _ellipse(u, v, 0.0, -0.25, fw + 0.08, 0.98, px) * np.clip(0.5 - (v + 0.7 - 0.25 * u**2) * px, 0, 1)
        if style == "curly":
            top = np.maximum(top, _ellipse(u, v, 0.0, -0.6, fw + 0.2, 0.62, px) * (v < -0.68 - 0.3 * u**2))
        if style == "side":
            top = np.maximum(top, _ellipse(u, v, -0.35, -0.62, 0.55, 0.2, px))
        layer(top, hair)
    if style == "bun":
        layer(_ellipse(u, v, 0.0, -1.12, 0.22, 0.16, px), hair)
    if ident.accessory == "glasses":
        for side in (-1, 1):
            ring = _ellipse(u, v, side * ident.eye_spacing, -0.14, 0.19, 0.14, px)
            ring -= _ellipse(u, v, side * ident.eye_spacing, -0.14, 0.165, 0.115, px)
            _paint(canvas, np.clip(ring, 0, 1), (0.1, 0.1, 0.12))
        bridge = np.clip(0.5 - (np.abs(v + 0.15) - 0.015) * px, 0, 1) * (np.abs(u) < ident.eye_spacing - 0.15)
        _paint(canvas, bridge, (0.1, 0.1, 0.12))
    elif ident.accessory == "earrings":
        for side in (-1, 1):
            layer(_ellipse(u, v, side * fw * 1.0, 0.2, 0.04, 0.04, px), (0.95, 0.8, 0.2))
    elif ident.accessory == "moustache":
        _paint(canvas, 0.85 * _ellipse(u, v, 0.0, my - 0.1, mw * 0.95, 0.04, px), hair * 0.8)
    elif ident.accessory == "beard":
        chin = face * np.clip((v - 0.45) * 4, 0, 1) * (1 - _ellipse(u, v, 0.0, my + gap / 2, mw * 1.1, gap / 2 + 0.09, px))
        _paint(canvas, 0.55 * chin, hair * 0.8)
    return np.clip(canvas, 0, 1), person > 0.5
