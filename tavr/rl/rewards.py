"""Rewards for RL fine-tuning, scored on CPU with dlib.

Every reward is built by a factory whose arguments are its knobs, and every
built reward has one signature:

    reward(videos, cond) -> (scores, info)

    videos  list of N generated videos, each (F, H, W, 3) uint8
    cond    per-sample lists, N long: "reference_frames" (Fr, H, W, 3) uint8,
            "audio" (S,) float32 driving audio; and shared scalars
            "audio_rate" (int, Hz) and "fps" (float)
    scores  (N,) float32, higher is better
    info    dict of (N,) arrays for logging

`REWARDS` lists the factories by name; `combined` weighs several into one.
dlib loads lazily, so importing this module costs nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from PIL import Image

from tavr.data import faces

Reward = Callable[[list[np.ndarray], dict], tuple[np.ndarray, dict]]


@functools.cache
def _recognizer():
    import dlib

    return dlib.face_recognition_model_v1(str(faces.model_path("dlib_face_recognition_resnet_model_v1.dat")))


def _upsampled(frame: np.ndarray, side: int) -> np.ndarray:
    """Frame (H, W, 3) resized so its shorter side is `side`; dlib misses faces in 128-px frames."""
    h, w = frame.shape[:2]
    scale = side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))


def best_face_scores(frames: np.ndarray, floor: float, upsample_to: int = 256) -> np.ndarray:
    """dlib's best detection score in each frame of (F, H, W, 3), counting detections down to `floor`
    (the rewards count >= 0 as a face; lower scores show progress first) -> (F,), -inf where none."""
    out = np.full(len(frames), -np.inf)
    for i, frame in enumerate(frames):
        _, scores, _ = faces._detector().run(np.ascontiguousarray(_upsampled(frame, upsample_to)), 0, floor)
        if len(scores):
            out[i] = max(scores)
    return out


def face_embedding(frame: np.ndarray, upsample_to: int = 256) -> np.ndarray | None:
    """dlib ResNet embedding (128,) of the best-scoring face in one frame (H, W, 3) uint8.

    None when no face is found. Costs ~100-150 ms on CPU, so embed a few frames only.
    """
    import dlib

    big = _upsampled(frame, upsample_to)
    boxes = faces.detect_faces(big)
    if not len(boxes):
        return None
    x0, y0, x1, y1 = (int(round(float(v))) for v in boxes[0, :4])
    shape = faces._predictor()(big, dlib.rectangle(x0, y0, x1, y1))
    return np.asarray(_recognizer().compute_face_descriptor(big, shape), dtype=np.float32)


def sample_indices(num_frames: int, count: int) -> list[int]:
    """`count` evenly spaced frame indices from 0 to num_frames - 1 (all frames if fewer)."""
    if num_frames < 1 or count < 1:
        raise ValueError(f"need at least one frame and one sample; got {num_frames} frames, count {count}")
    count = min(count, num_frames)
    return np.linspace(0, num_frames - 1, count).round().astype(int).tolist()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings (128,): the identity reward's and the benchmark's raw identity."""
    return float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def mean_embedding(video: np.ndarray, count: int) -> tuple[np.ndarray | None, int]:
    """Mean embedding (128,) over `count` evenly sampled frames of (F, H, W, 3), and how many had a face."""
    embs = [face_embedding(video[i]) for i in sample_indices(len(video), count)]
    embs = [e for e in embs if e is not None]
    return (np.mean(embs, axis=0) if embs else None), len(embs)


def face_track(video: np.ndarray, upsample_to: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Best face in every frame of (F, H, W, 3): boxes (F, 4) x0, y0, x1, y1 in the video's pixels
    and mouth opening (F,) float32, both NaN where no face is found."""
    boxes = np.full((len(video), 4), np.nan, dtype=np.float32)
    mouth = np.full(len(video), np.nan, dtype=np.float32)
    for i, frame in enumerate(video):
        big = _upsampled(frame, upsample_to)
        found = faces.detect_faces(big)
        if len(found):
            mouth[i] = faces.mouth_opening(faces.landmarks(big, found[0]))
            boxes[i] = found[0, :4] * (min(frame.shape[:2]) / min(big.shape[:2]))
    return boxes, mouth


def mouth_track(video: np.ndarray, upsample_to: int = 256) -> np.ndarray:
    """Mouth opening per frame of (F, H, W, 3) -> (F,) float32, NaN where no face is found."""
    return face_track(video, upsample_to)[1]


def _check(videos: list[np.ndarray], per_sample: list, key: str) -> None:
    if len(per_sample) != len(videos):
        raise ValueError(f"cond[{key!r}] has {len(per_sample)} entries for {len(videos)} videos")
    for i, v in enumerate(videos):
        if v.ndim != 4 or v.shape[-1] != 3 or v.dtype != np.uint8:
            raise ValueError(f"video {i} is {v.dtype} {v.shape}; expected uint8 (F, H, W, 3)")


def identity_reward(frames: int = 4) -> Reward:
    """Cosine similarity of the mean dlib embedding of `frames` generated and `frames` reference frames.

    Cosine, not dlib's native euclidean distance, so that higher is better and
    the scale is bounded; dlib embeddings are not centred, so different people
    still score ~0.9-0.99 and same-person pairs ~0.99+. info["distance"] has the
    euclidean distance of the means (dlib: same person below 0.6; NaN without a
    face). A video with no face in any sampled frame scores 0. Each distinct
    reference array is embedded once per call: a GRPO group shares one.
    """

    def reward(videos: list[np.ndarray], cond: dict) -> tuple[np.ndarray, dict]:
        refs = cond["reference_frames"]
        _check(videos, refs, "reference_frames")
        n = len(videos)
        scores, distance = np.zeros(n, np.float32), np.full(n, np.nan, np.float32)
        found = np.zeros(n, np.int64)
        ref_cache: dict[int, np.ndarray] = {}  # id(reference array) -> mean embedding
        for i, (video, ref) in enumerate(zip(videos, refs)):
            if id(ref) not in ref_cache:
                emb, _ = mean_embedding(ref, frames)
                if emb is None:
                    raise ValueError(f"no face in the {frames} sampled reference frames of sample {i}")
                ref_cache[id(ref)] = emb
            r = ref_cache[id(ref)]
            g, found[i] = mean_embedding(video, frames)
            if g is not None:
                scores[i] = cosine(g, r)
                distance[i] = np.linalg.norm(g - r)
        return scores, {"distance": distance, "faces": found}

    return reward


def lipsync_score(mouth: np.ndarray, audio: np.ndarray, rate: int, fps: float, max_lag: int = 3) -> tuple[float, int | None]:
    """(correlation, lag) of a mouth track (F,), NaN where no face, with the audio's RMS envelope
    at the best lag in +-max_lag frames; frames without a face take the mean opening.
    (0.0, None) with fewer than 3 faces."""
    found = ~np.isnan(mouth)
    if found.sum() < 3:
        return 0.0, None
    filled = np.where(found, mouth, mouth[found].mean())
    return faces.best_lag_correlation(filled, faces.audio_envelope(audio, rate, fps, len(mouth)), max_lag)


def lipsync_reward(max_lag: int = 3) -> Reward:
    """Pearson correlation of mouth opening and audio RMS per frame at the best lag in ±max_lag frames.

    Mouth opening comes from dlib landmarks on every frame; frames without a
    face take the mean opening. Fewer than 3 faces scores 0. info["lag"] is the
    best lag, positive when the mouth follows the audio (faces.best_lag_correlation).
    """

    def reward(videos: list[np.ndarray], cond: dict) -> tuple[np.ndarray, dict]:
        audios, rate, fps = cond["audio"], cond["audio_rate"], cond["fps"]
        _check(videos, audios, "audio")
        n = len(videos)
        scores, lags, rates = np.zeros(n, np.float32), np.zeros(n, np.int64), np.zeros(n, np.float32)
        for i, (video, audio) in enumerate(zip(videos, audios)):
            mouth = mouth_track(video)
            rates[i] = (~np.isnan(mouth)).mean()
            scores[i], lag = lipsync_score(mouth, audio, rate, fps, max_lag)
            lags[i] = 0 if lag is None else lag
        return scores, {"lag": lags, "face_rate": rates}

    return reward


FACE_FLOOR = -1.5  # dlib detections scored down to this count as "something face-like"; real faces score about +1


def face_reward(frames: int = 4, floor: float = FACE_FLOOR) -> Reward:
    """How face-like `frames` evenly sampled frames are: dlib's best detection score per frame, clipped to
    [floor, 1] and mapped to [0, 1], averaged. Dense where identity and lip sync are not: it rises
    before dlib counts a face (score >= 0), so GRPO has a signal while faces are still rare.
    info["faces"] counts the sampled frames with a face."""

    def reward(videos: list[np.ndarray], cond: dict) -> tuple[np.ndarray, dict]:
        _check(videos, videos, "videos")
        scores, found = np.zeros(len(videos), np.float32), np.zeros(len(videos), np.int64)
        for i, video in enumerate(videos):
            best = best_face_scores(video[sample_indices(len(video), frames)], floor)
            scores[i] = float(np.mean((np.clip(best, floor, 1.0) - floor) / (1.0 - floor)))
            found[i] = int((best >= 0).sum())
        return scores, {"faces": found}

    return reward


REWARDS: dict[str, Callable[..., Reward]] = {"identity": identity_reward, "lipsync": lipsync_reward, "face": face_reward}


def combined(weights: dict[str, float], **factory_kwargs: dict) -> Reward:
    """Weighted sum of named rewards; factory_kwargs maps a name to its factory's arguments.

    combined({"identity": 1.0, "lipsync": 0.5}, lipsync={"max_lag": 2})
    info holds each component's scores under its name, its info under
    "<name>/<key>", and the weighted sum under "reward".
    """
    unknown = sorted((set(weights) | set(factory_kwargs)) - set(REWARDS))
    if unknown:
        raise ValueError(f"unknown rewards {unknown}; known: {sorted(REWARDS)}")
    unused = sorted(set(factory_kwargs) - set(weights))
    if unused:
        raise ValueError(f"arguments given for rewards without a weight: {unused}")
    fns = {name: REWARDS[name](**factory_kwargs.get(name, {})) for name in weights}

    def reward(videos: list[np.ndarray], cond: dict) -> tuple[np.ndarray, dict]:
        total, info = np.zeros(len(videos), np.float32), {}
        for name, fn in fns.items():
            scores, sub = fn(videos, cond)
            total += np.float32(weights[name]) * scores
            info[name] = scores
            info.update({f"{name}/{k}": v for k, v in sub.items()})
        info["reward"] = total
        return total, info

    return reward
