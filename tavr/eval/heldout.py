"""Identity similarity on held-out benchmark pairs: the number each training stage reports.

For each of the first `count` pairs of the bench file, the pipeline generates the target
clip's first chunk (its `chunk_frames` frames, the length every stage trains on) from the
reference clip (a cross-scene video of the same held-out person, with its own audio as the
reference audio, as in training; an image pipeline ignores it), the target clip's frames as
background with its person mask, and the target clip's audio. The score is the
identity reward (tavr.rl.rewards.identity_reward): cosine of mean dlib embeddings of
`frames` generated and reference frames, 0 where no face is found. Seeds are fixed, so
two models are compared on the same pairs and noise.
"""

from __future__ import annotations

import numpy as np

from tavr.config import HeldoutConfig
from tavr.data.pairs import load_pairs
from tavr.progress import bar as progress_bar
from tavr.data.synth import load_masks
from tavr.data.video import read_audio, read_video
from tavr.rl.rewards import identity_reward


def identity_heldout(pipeline, cfg: HeldoutConfig, progress: bool = True) -> dict:
    """{"identity_heldout": mean score, "heldout_face_rate": share of videos with a face, "heldout_pairs": n}.

    `pipeline` is a TAVRPipeline. Returns {} when cfg.count is 0.
    """
    if cfg.count <= 0:
        return {}
    root, pairs = load_pairs(cfg.pairs)
    pairs = pairs[: cfg.count]
    if not pairs:
        raise ValueError(f"{cfg.pairs} holds no pairs")
    gen = pipeline.config
    n = gen.chunk_frames
    reward = identity_reward(cfg.frames)
    videos, refs = [], []
    for i, pair in enumerate(progress_bar(pairs, desc="identity_heldout", unit="pair", disable=not progress)):
        ref = read_video(root / pair["reference"], audio_rate=gen.audio_rate)  # with its own voice, as in training
        target = read_video(root / pair["target"]).frames[:n]
        mask = load_masks(root / pair["target_mask"])[:n]
        audio = read_audio(root / pair["driving_audio"], gen.audio_rate)[: round(n / gen.fps * gen.audio_rate)]
        out = pipeline(ref.frames, target, audio, reference_audio=ref.audio, background_mask=mask, num_steps=cfg.steps,
                       seed=cfg.seed + i)  # fmt: skip
        videos.append(out.frames)
        refs.append(ref.frames)
    scores, info = reward(videos, {"reference_frames": refs})
    return {
        "identity_heldout": float(np.mean(scores)),
        "heldout_face_rate": float(np.mean(info["faces"] > 0)),
        "heldout_pairs": len(pairs),
    }
