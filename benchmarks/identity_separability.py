"""Can dlib tell the bench people apart? On the original clips and through a codec's reconstructions.

    python benchmarks/identity_separability.py [--manifest data/clips/manifest.parquet] [--codec models/codec]
        [--split bench] [--frames 2] [--out benchmarks/results/identity_separability.json]

Per clip: the mean dlib embedding of `frames` evenly sampled frames (unit length). Then
  - distances within a person and between people (euclidean; dlib calls < 0.6 the same person)
  - verification ROC AUC: every pair of clips, same person or not, ranked by distance
  - top-1 identification: each clip against a gallery of one clip per person (for its own person a
    clip from another scene when there is one), the benchmark's question
  - the same with the gallery's centred cosine (tavr.eval.metrics.Gallery), the metric the
    benchmark reports
for the originals and, with --codec, for every clip encoded and decoded by that codec.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from tavr.data.video import read_video
from tavr.eval.metrics import Gallery
from tavr.files import write_json
from tavr.models.vae import load_vae
from tavr.pipeline import to_frames, to_video_tensor
from tavr.rl.rewards import mean_embedding


def embeddings(videos: list[np.ndarray], frames: int) -> np.ndarray:
    out = []
    for v in videos:
        e, _ = mean_embedding(v, frames)
        out.append(np.full(128, np.nan, np.float32) if e is None else e / np.linalg.norm(e))
    return np.stack(out)


def separability(emb: np.ndarray, people: np.ndarray, scenes: np.ndarray) -> dict:
    ok = ~np.isnan(emb).any(axis=1)
    emb, people, scenes = emb[ok], people[ok], scenes[ok]
    dist = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    same = people[:, None] == people[None]
    iu = np.triu_indices(len(emb), 1)
    hits, centred = [], []
    for i in range(len(emb)):
        gallery = {}
        for j in np.argsort(scenes != scenes[i], kind="stable")[::-1]:  # other scenes first
            if j != i and people[j] not in gallery:
                gallery[people[j]] = j
        names = list(gallery)
        hits.append(names[int(np.argmin([dist[i, gallery[n]] for n in names]))] == people[i])
        g = Gallery(tuple(names), emb[[gallery[n] for n in names]])
        centred.append(g.identify(emb[i], people[i])["id_top1"] if people[i] in g.people else 0.0)
    return {
        "clips": int(len(emb)), "people": int(len(set(people))), "no_face": int((~ok).sum()),
        "distance_same": float(dist[iu][same[iu]].mean()), "distance_different": float(dist[iu][~same[iu]].mean()),
        "distance_different_min": float(dist[iu][~same[iu]].min()), "distance_same_max": float(dist[iu][same[iu]].max()),
        "verification_auc": float(roc_auc_score(same[iu], -dist[iu])),
        "top1_euclidean": float(np.mean(hits)), "top1_centred_cosine": float(np.mean(centred)),
    }  # fmt: skip


@torch.no_grad()
def reconstruct(codec, video: np.ndarray) -> np.ndarray:
    n = len(video) - (len(video) - 1) % 4  # 4k + 1 frames
    return to_frames(codec.decode(codec.encode(to_video_tensor(video[:n]))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", default="data/clips/manifest.parquet")
    ap.add_argument("--codec", default="models/codec", help="a codec folder ('' = originals only)")
    ap.add_argument("--split", default="bench")
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/identity_separability.json")
    args = ap.parse_args()
    manifest = Path(args.manifest)
    table = pd.read_parquet(manifest)
    table = table[table["split"] == args.split]
    videos = [read_video(manifest.parent / p).frames for p in table["path"]]
    people, scenes = table["identity"].to_numpy(), table["scene"].to_numpy()
    result = {"command": "python benchmarks/identity_separability.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
              "split": args.split, "frames_per_clip": args.frames}  # fmt: skip
    start = time.perf_counter()
    result["originals"] = separability(embeddings(videos, args.frames), people, scenes)
    if args.codec:
        codec = load_vae(args.codec).eval()
        result["codec"] = args.codec
        result["reconstructions"] = separability(embeddings([reconstruct(codec, v) for v in videos], args.frames), people, scenes)
    result["seconds"] = round(time.perf_counter() - start, 1)
    write_json(args.out, result, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
