"""TAVR-Synth: procedural talking heads, the embedded default data set.

`plan(cfg)` decides which identity is filmed in which scene and which clips are
held out; `render_clip(cfg, spec)` draws one clip (frames, person masks, audio);
`generate(cfg, out)` writes the whole set in the layout `tavr ingest` reads:

    out/<identity>/<scene>/<clip>.mp4        H.264 + AAC, `cfg.fps`, `cfg.size` square
    out/<identity>/<scene>/<clip>.mask.npz   person mask per frame, bit-packed (F, H, W)
    out/<identity>/<scene>/<clip>.json       split, attributes, per-frame mouth/eyes, syllables
    out/synth.json                           the plan and config, written last

The last `bench_identities` identities appear only in the last `bench_scenes`
scenes, and those scenes hold nobody else, so benchmark pairs share neither
identity nor scene with any training clip. Everything is a function of the seed.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from tavr.config import SynthConfig, to_dict
from tavr.data.synth.face import Identity, Pose, draw_person, sample_identity
from tavr.data.synth.scene import Scene, background, light, sample_scene
from tavr.data.synth.speech import per_frame, plan_syllables, synthesize
from tavr.data.video import write_video
from tavr.files import write_json


@dataclass(frozen=True)
class ClipSpec:
    identity: int
    scene: int
    clip: int
    split: str  # "train" | "bench"

    @property
    def names(self) -> tuple[str, str, str]:
        return f"id{self.identity:03d}", f"sc{self.scene:02d}", f"clip{self.clip:02d}"

    @property
    def clip_id(self) -> str:
        return "/".join(self.names)


@dataclass
class SynthClip:
    frames: np.ndarray  # (F, H, W, 3) uint8
    masks: np.ndarray  # (F, H, W) bool, person pixels
    audio: np.ndarray  # (N,) float32, cfg.audio_rate
    meta: dict


def identity(cfg: SynthConfig, index: int) -> Identity:
    return sample_identity(np.random.default_rng([cfg.seed, 1, index]), cfg.shift)


def scene(cfg: SynthConfig, index: int) -> Scene:
    n_photo = math.ceil(cfg.photo_fraction * cfg.scenes)
    photos = set(np.random.default_rng([cfg.seed, 3]).permutation(cfg.scenes)[:n_photo].tolist())
    return sample_scene(np.random.default_rng([cfg.seed, 2, index]), photo=index in photos)


def resized(cfg: SynthConfig, identities: int | None = None, scenes: int | None = None) -> SynthConfig:
    """`cfg` with another identity/scene count; held-out counts keep their share.

    The defaults hold out 10 of 48 identities and 3 of 12 scenes; a resized set
    keeps about those shares, with at least one bench identity and two bench
    scenes when there are enough scenes (three or more), and none otherwise.
    """
    if identities is None and scenes is None:
        return cfg
    ids = cfg.identities if identities is None else identities
    scs = cfg.scenes if scenes is None else scenes
    if ids < 1 or scs < 1:
        raise ValueError(f"synth needs at least 1 identity and 1 scene; got {ids} and {scs}")
    if ids >= 2 and scs >= 3:
        bench_ids = max(1, round(ids * cfg.bench_identities / cfg.identities))
        bench_scs = min(scs - 1, max(2, round(scs * cfg.bench_scenes / cfg.scenes)))
    else:
        bench_ids = bench_scs = 0
    return replace(cfg, identities=ids, scenes=scs, bench_identities=bench_ids, bench_scenes=bench_scs)


def plan(cfg: SynthConfig) -> list[ClipSpec]:
    """Every clip of the data set, train identities first."""
    n_train_id = cfg.identities - cfg.bench_identities
    n_train_sc = cfg.scenes - cfg.bench_scenes
    if n_train_id < 1 or n_train_sc < 1:
        raise ValueError(
            f"synth needs at least one training identity and scene; got {cfg.identities} identities "
            f"({cfg.bench_identities} held out) and {cfg.scenes} scenes ({cfg.bench_scenes} held out)"
        )
    if cfg.bench_identities > 0 and cfg.bench_scenes < 2:
        raise ValueError(f"cross-scene benchmark pairs need at least 2 bench scenes; got {cfg.bench_scenes}")
    specs = []
    for i in range(cfg.identities):
        if i < n_train_id:
            k = min(cfg.scenes_per_identity, n_train_sc)
            scenes = sorted(np.random.default_rng([cfg.seed, 5, i]).choice(n_train_sc, size=k, replace=False).tolist())
            split = "train"
        else:
            scenes, split = list(range(n_train_sc, cfg.scenes)), "bench"
        specs += [ClipSpec(i, s, c, split) for s in scenes for c in range(cfg.clips_per_scene)]
    return specs


def _motion(rng: np.random.Generator, n: int, fps: float, amp: float) -> np.ndarray:
    """A smooth wandering signal (n,) of roughly +-amp: two random sinusoids."""
    t = np.arange(n) / fps
    f = rng.uniform(0.15, 0.6, 2)
    ph = rng.uniform(0, 2 * np.pi, 2)
    return amp * (0.7 * np.sin(2 * np.pi * f[0] * t + ph[0]) + 0.3 * np.sin(2 * np.pi * f[1] * t + ph[1]))


def _blinks(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """Eye openness per frame (n,): 1 open, 0 closed, 0.16-s blinks at ~0.4 Hz."""
    t = np.arange(n) / fps
    eyes = np.ones(n)
    for tb in rng.uniform(0, n / fps, rng.poisson(0.4 * n / fps) + 1):
        eyes = np.minimum(eyes, np.clip(np.abs(t - tb) / 0.08, 0, 1))
    return eyes


def render_clip(cfg: SynthConfig, spec: ClipSpec, frames: list[int] | None = None) -> SynthClip:
    """Draw one clip; `frames` limits drawing to those indices (audio is always whole)."""
    ident, sc = identity(cfg, spec.identity), scene(cfg, spec.scene)
    rng = np.random.default_rng([cfg.seed, 4, spec.identity, spec.scene, spec.clip])
    n = int(round(cfg.seconds * cfg.fps))
    syllables = plan_syllables(rng, cfg.seconds, rate_hz=float(rng.uniform(3.5, 5.0)))
    audio, mouth_samples = synthesize(rng, syllables, cfg.seconds, cfg.audio_rate, ident.pitch)
    mouth = np.clip(per_frame(mouth_samples, cfg.audio_rate, cfg.fps, n) * 1.15, 0, 1)
    eyes = _blinks(rng, n, cfg.fps)
    size = cfg.size
    sway, bob, tilt = _motion(rng, n, cfg.fps, 0.02 * size), _motion(rng, n, cfg.fps, 0.012 * size), _motion(rng, n, cfg.fps, 0.05)
    cx0, cy0 = size * (0.5 + sc.offset[0]), size * (0.47 + sc.offset[1])
    bg = background(sc, size)
    indices = range(n) if frames is None else frames
    out = np.zeros((len(indices), size, size, 3), dtype=np.uint8)
    masks = np.zeros((len(indices), size, size), dtype=bool)
    for k, i in enumerate(indices):
        pose = Pose(cx0 + sway[i], cy0 + bob[i] + 0.01 * size * mouth[i], 0.31 * size * sc.face_scale, tilt[i], mouth[i], eyes[i])
        img, masks[k] = draw_person(ident, pose, bg)
        out[k] = np.round(light(img, sc) * 255).astype(np.uint8)
    meta = {
        "clip_id": spec.clip_id,
        "identity": spec.names[0],
        "scene": spec.names[1],
        "split": spec.split,
        "seed": cfg.seed,
        "fps": cfg.fps,
        "frames": n,
        "audio_rate": cfg.audio_rate,
        "identity_attributes": ident.attributes(),
        "scene_attributes": sc.attributes(),
        "mouth": np.round(mouth, 4).tolist(),
        "eyes": np.round(eyes, 4).tolist(),
        "syllables": [asdict(s) for s in syllables],
    }
    return SynthClip(out, masks, audio, meta)


def save_masks(path: Path, masks: np.ndarray) -> None:
    """Bit-pack a (F, H, W) bool mask stack into an npz, atomically."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, bits=np.packbits(masks, axis=-1), shape=np.array(masks.shape))
    os.replace(tmp, path)


def load_masks(path: str | Path) -> np.ndarray:
    """Inverse of `save_masks` -> (F, H, W) bool."""
    with np.load(path) as z:
        shape = tuple(z["shape"].tolist())
        return np.unpackbits(z["bits"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)


def write_clip(cfg: SynthConfig, spec: ClipSpec, out: Path) -> str:
    """Render one clip and write its mp4, mask and json under `out`; returns the clip id."""
    clip = render_clip(cfg, spec)
    base = out.joinpath(*spec.names)
    base.parent.mkdir(parents=True, exist_ok=True)
    write_video(base.with_suffix(".mp4"), clip.frames, cfg.fps, clip.audio, cfg.audio_rate)
    save_masks(base.with_suffix(".mask.npz"), clip.masks)
    write_json(base.with_suffix(".json"), clip.meta, indent=1, newline=False)
    return spec.clip_id


def _write_job(args: tuple[SynthConfig, ClipSpec, Path]) -> str:
    return write_clip(*args)


def generate(cfg: SynthConfig, out: str | Path, progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the whole data set to `out`; returns the summary also saved as synth.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = plan(cfg)
    workers = cfg.workers or os.cpu_count() or 1
    jobs = [(cfg, s, out) for s in specs]
    done = 0
    if workers == 1:
        results = map(_write_job, jobs)
    else:
        pool = mp.get_context("fork").Pool(min(workers, len(jobs)))
        results = pool.imap_unordered(_write_job, jobs, chunksize=2)
    try:
        for _ in results:
            done += 1
            if progress:
                progress(done, len(specs))
    finally:
        if workers != 1:
            pool.close()
            pool.join()
    summary = {
        "config": to_dict(cfg),
        "clips": len(specs),
        "identities": {s: sorted({c.names[0] for c in specs if c.split == s}) for s in ("train", "bench")},
        "scenes": {s: sorted({c.names[1] for c in specs if c.split == s}) for s in ("train", "bench")},
        "photo_scenes": sorted(f"sc{j:02d}" for j in range(cfg.scenes) if scene(cfg, j).kind == "photo"),
    }
    write_json(out / "synth.json", summary, indent=1, newline=False)
    return summary
