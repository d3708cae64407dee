"""Benchmark metrics: one generated video scored against its pair's inputs.

    identity         cosine of the mean dlib ResNet embedding of `identity_frames` evenly sampled
                     generated frames and as many reference frames (tavr.rl.rewards); 0 without a face.
                     Raw: any two faces score about 0.95, so it ranks nothing on its own
    id_top1          1 when the generated face is nearer the right person than every other person of
                     the gallery (`Gallery`: every bench person's reference embedding), else 0 (also
                     without a face); its mean is identification accuracy, chance 1 / gallery size
    id_margin        centred cosine to the right person minus the best wrong person's (> 0: identified);
                     None without a face
    lipsync          Pearson correlation of mouth opening (dlib landmarks, every frame) with the
                     driving audio's RMS envelope, at the best offset in +-max_offset frames
                     (in the spirit of LSE-C); 0 with fewer than 3 faces
    lipsync_offset   that offset in frames, positive when the mouth follows the audio (LSE-D's
                     counterpart: a well-synced video has 0); None with fewer than 3 faces
    bg_psnr, bg_ssim outside the person mask: generated frames against the target background
                     (PSNR in dB over every outside pixel, capped at 100 for identical pixels;
                     SSIM's 7x7 map averaged where the window holds no person pixel)
    person_psnr      inside the person mask: generated frames against the real target frames (dB);
                     how much of the right person (face, hair, clothes, pose) the video reproduces,
                     which a wrong person's reference lowers even where no face is detected
    stability        mean absolute change between consecutive frames inside the face box,
                     0-255 scale (lower is steadier); None with fewer than 2 consecutive faces
    face_rate        share of frames in which dlib finds a face
    fid, fvd         None: computed only from locally supplied weights, never estimated

Inputs are uint8 frames (F, H, W, 3); masks are bool (F, H, W), True on the person.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import maximum_filter
from skimage.metrics import structural_similarity

from tavr.rl.rewards import cosine, face_track, identity_reward, lipsync_score, mean_embedding

PSNR_CAP = 100.0
SSIM_WINDOW = 7  # skimage's default window; SSIM is averaged where the window is clear of the person
NOT_COMPUTED = {"fid": None, "fvd": None}


def _frames(name: str, video: np.ndarray) -> np.ndarray:
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8 or len(video) == 0:
        raise ValueError(f"{name} must be uint8 frames (F, H, W, 3); got {video.dtype} {video.shape}")
    return video


def reference_embedding_of(reference: np.ndarray, frames: int = 4) -> np.ndarray | None:
    """Mean embedding (128,) of `frames` evenly sampled frames of a reference video (F, H, W, 3); None without a face."""
    return mean_embedding(_frames("reference", reference), frames)[0]


def identity(generated: np.ndarray, reference: np.ndarray, frames: int = 4) -> tuple[float, int]:
    """(the identity reward of `generated` against `reference`, generated frames with a face among the sampled)."""
    generated, reference = _frames("generated", generated), _frames("reference", reference)
    scores, info = identity_reward(frames)([generated], {"reference_frames": [reference]})
    return float(scores[0]), int(info["faces"][0])


@dataclass(frozen=True)
class Gallery:
    """One mean dlib embedding per person: who a generated face is identified as.

    Similarities are cosines after subtracting the gallery's mean embedding: dlib's embeddings share a
    large common component (raw cosines of different people are ~0.95), centring leaves what tells
    people apart."""

    people: tuple[str, ...]
    embeddings: np.ndarray  # (P, 128)
    references: dict[str, np.ndarray] = field(default_factory=dict, compare=False)  # clip -> its mean embedding (128,),
    # kept so that every method scoring a pair reads its reference's embedding instead of computing it again

    @classmethod
    def of_embeddings(cls, references: dict[str, list[np.ndarray | None]]) -> Gallery:
        """From the reference_embedding of each person's reference videos (None: no face in that video);
        a person none of whose videos shows a face is an error."""
        people, embs = [], []
        for person, found in references.items():
            found = [e for e in found if e is not None]
            if not found:
                raise ValueError(f"no face in any reference video of {person}: it cannot be in the gallery")
            people.append(person)
            embs.append(np.mean(found, axis=0))
        if len(people) < 2:
            raise ValueError(f"a gallery needs at least 2 people; got {len(people)}")
        return cls(tuple(people), np.stack(embs).astype(np.float32))

    def save(self, path, source: str = "") -> None:
        """An .npz of the people, their embeddings and `source` (the sha256 of the pairs file it came from)."""
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        clips = sorted(self.references)
        np.savez(path, people=np.array(self.people), embeddings=self.embeddings, source=np.array(source),
                 clips=np.array(clips, dtype=str), clip_embeddings=np.array([self.references[c] for c in clips]) if clips else np.zeros((0, 128)))  # fmt: skip

    @classmethod
    def load(cls, path) -> tuple[Gallery, str]:
        with np.load(path) as f:
            refs = dict(zip((str(c) for c in f["clips"]), f["clip_embeddings"])) if "clips" in f else {}
            return cls(tuple(str(p) for p in f["people"]), f["embeddings"].astype(np.float32), refs), str(f["source"])

    def similarities(self, embedding: np.ndarray) -> np.ndarray:
        """Centred cosine (P,) of one embedding (128,) to every person."""
        centre = self.embeddings.mean(axis=0)
        g, e = self.embeddings - centre, np.asarray(embedding, np.float32) - centre
        return (g @ e) / np.maximum(np.linalg.norm(g, axis=1) * np.linalg.norm(e), 1e-12)

    def identify(self, embedding: np.ndarray | None, person: str) -> dict:
        """{"id_top1": 0 or 1, "id_margin": right minus best wrong (None without a face)}."""
        if person not in self.people:
            raise ValueError(f"{person} is not in the gallery ({', '.join(self.people)})")
        if embedding is None:
            return {"id_top1": 0.0, "id_margin": None}
        sims = self.similarities(embedding)
        k = self.people.index(person)
        wrong = np.delete(sims, k)
        return {"id_top1": float(sims[k] > wrong.max()), "id_margin": float(sims[k] - wrong.max())}


def lipsync(mouth: np.ndarray, audio: np.ndarray, rate: int, fps: float, max_offset: int = 3) -> tuple[float, int | None]:
    """(correlation at the best offset, the offset) from a mouth track (F,) with NaN where no face:
    the lip-sync reward's own computation (tavr.rl.rewards.lipsync_score)."""
    return lipsync_score(mouth, audio, rate, fps, max_offset)


def _looped(generated: np.ndarray, target: np.ndarray, person: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """generated (F, H, W, 3), and the target and mask looped to its F frames (they may be shorter,
    as the pipeline loops a background)."""
    generated, target = _frames("generated", generated), _frames("target", target)
    person = np.asarray(person, dtype=bool)
    if target.shape[1:] != generated.shape[1:] or person.shape[1:] != generated.shape[1:3]:
        raise ValueError(f"sizes differ: generated {generated.shape}, target {target.shape}, mask {person.shape}")
    idx = np.arange(len(generated))
    return generated, target[idx % len(target)], person[idx % len(person)]


def _psnr(generated: np.ndarray, target: np.ndarray, where: np.ndarray) -> float:
    """PSNR (dB, capped at PSNR_CAP) over the pixels `where` (F, H, W) is True."""
    diff = generated.astype(np.float64) - target.astype(np.float64)
    mse = float((diff**2)[where].mean())
    return PSNR_CAP if mse == 0 else float(min(PSNR_CAP, 10 * np.log10(255.0**2 / mse)))


def person_psnr(generated: np.ndarray, target: np.ndarray, person: np.ndarray) -> float | None:
    """PSNR (dB) of generated vs target frames inside the person mask; None when the mask is empty."""
    generated, target, person = _looped(generated, target, person)
    return _psnr(generated, target, person) if person.any() else None


def background(generated: np.ndarray, target: np.ndarray, person: np.ndarray) -> tuple[float, float]:
    """(PSNR dB, SSIM) of generated vs target frames over pixels outside the person mask."""
    generated, target, person = _looped(generated, target, person)
    if person.all():
        raise ValueError("the person mask covers every pixel: no background to compare")
    psnr = _psnr(generated, target, ~person)
    ssim = []
    for g, t, p in zip(generated, target, person):
        clear = ~maximum_filter(p, size=SSIM_WINDOW)  # pixels whose SSIM window holds no person
        if clear.any():
            _, smap = structural_similarity(g, t, channel_axis=-1, data_range=255, win_size=SSIM_WINDOW, full=True)
            ssim.append(float(smap.mean(axis=-1)[clear].mean()))
    return psnr, (float(np.mean(ssim)) if ssim else float("nan"))


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
                identity_frames: int = 4, max_offset: int = 3, gallery: Gallery | None = None,
                person: str | None = None, reference_embedding: np.ndarray | None = None) -> dict:  # fmt: skip
    """Every metric above for one generated video; one face-tracking pass serves lip sync,
    stability and face rate. id_top1 and id_margin need the gallery and the pair's person.
    `reference_embedding`: the reference's mean embedding when already known (Gallery.references)."""
    generated = _frames("generated", generated)
    boxes, mouth = face_track(generated)
    g, _ = mean_embedding(generated, identity_frames)  # embedded once for both identity measures
    r = reference_embedding if reference_embedding is not None else reference_embedding_of(reference, identity_frames)
    if r is None:
        raise ValueError(f"no face in the {identity_frames} sampled reference frames")
    ident = 0.0 if g is None else cosine(g, r)  # the identity reward's score
    ids = {"id_top1": None, "id_margin": None}
    if gallery is not None and person is not None:
        ids = gallery.identify(g, person)
    sync, offset = lipsync(mouth, np.asarray(audio, dtype=np.float32), audio_rate, fps, max_offset)
    psnr, ssim = background(generated, target_background, person_mask)
    return {
        "identity": ident, **ids, "lipsync": sync, "lipsync_offset": offset, "bg_psnr": psnr, "bg_ssim": ssim,
        "person_psnr": person_psnr(generated, target_background, person_mask), "stability": stability(generated, boxes),
        "face_rate": float((~np.isnan(mouth)).mean()), **NOT_COMPUTED,
    }  # fmt: skip
