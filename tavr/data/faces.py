"""dlib face tools: frontal detector, 68-point landmarks, mouth opening.

The model files ship inside the `face-recognition-models` package. Its
`__init__` imports the removed `pkg_resources`, so the files are located with
`importlib.util.find_spec` instead of importing it. Models load lazily, once
per process, so importing this module costs nothing.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np


def model_path(name: str) -> Path:
    """Path of a dlib model file shipped by `face-recognition-models`."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise RuntimeError("face-recognition-models is not installed; it ships dlib's model files")
    path = Path(spec.origin).parent / "models" / name
    if not path.is_file():
        raise RuntimeError(f"dlib model file {path} is missing")
    return path


@functools.cache
def _detector():
    import dlib

    return dlib.get_frontal_face_detector()


@functools.cache
def _predictor():
    import dlib

    return dlib.shape_predictor(str(model_path("shape_predictor_68_face_landmarks.dat")))


def detect_faces(frame: np.ndarray, upsample: int = 0) -> np.ndarray:
    """Face boxes in one RGB frame (H, W, 3) uint8 -> (N, 5): x0, y0, x1, y1, score.

    Sorted by score, best first.
    """
    rects, scores, _ = _detector().run(np.ascontiguousarray(frame), upsample, 0.0)
    boxes = [(r.left(), r.top(), r.right(), r.bottom(), s) for r, s in zip(rects, scores)]
    boxes.sort(key=lambda b: -b[4])
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 5)


def landmarks(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """68 dlib landmarks (68, 2) in pixels for a face box (x0, y0, x1, y1, ...)."""
    import dlib

    x0, y0, x1, y1 = (int(round(float(v))) for v in box[:4])
    shape = _predictor()(np.ascontiguousarray(frame), dlib.rectangle(x0, y0, x1, y1))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def mouth_opening(points: np.ndarray) -> float:
    """Inner-lip gap over the face's eye-to-mouth height (scale free).

    Uses the three inner-lip pairs (61-67, 62-66, 63-65) of the 68-point scheme.
    """
    gap = np.mean([np.linalg.norm(points[a] - points[b]) for a, b in ((61, 67), (62, 66), (63, 65))])
    eyes = points[36:48].mean(axis=0)
    mouth = points[48:68].mean(axis=0)
    return float(gap / max(np.linalg.norm(mouth - eyes), 1e-6))


def audio_envelope(audio: np.ndarray, rate: int, fps: float, frames: int) -> np.ndarray:
    """RMS of `audio` (N,) in one window per video frame -> (frames,)."""
    hop = rate / fps
    env = np.zeros(frames, dtype=np.float32)
    for i in range(frames):
        a, b = int(round(i * hop)), int(round((i + 1) * hop))
        seg = audio[a:b]
        env[i] = float(np.sqrt(np.mean(seg**2))) if len(seg) else 0.0
    return env


def best_lag_correlation(x: np.ndarray, y: np.ndarray, max_lag: int = 3) -> tuple[float, int]:
    """Pearson correlation of x[t] with y[t - lag] at the best lag in [-max_lag, max_lag].

    Returns (correlation, lag). A positive lag means `x` follows `y`.
    NaN-free: a constant series scores 0.
    """
    best, best_lag = -np.inf, 0
    n = min(len(x), len(y))
    for lag in range(-max_lag, max_lag + 1):
        a = x[max(lag, 0) : n + min(lag, 0)]
        b = y[max(-lag, 0) : n - max(lag, 0)]
        if len(a) < 3 or a.std() == 0 or b.std() == 0:
            r = 0.0
        else:
            r = float(np.corrcoef(a, b)[0, 1])
        if r > best:
            best, best_lag = r, lag
    return float(best), best_lag
