"""Cross-scene benchmark pairs from an ingest manifest.

A pair is a reference clip and a target clip of the same identity filmed in
different scenes, both from the bench split; the target clip's audio drives
the generation, and its frames (person masked out) give the target background.
Pairs are spread evenly over identities and drawn deterministically by seed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd


def make_pairs(manifest: pd.DataFrame, n: int, seed: int = 0) -> list[dict]:
    """Up to `n` cross-scene pairs from the bench split, round-robin over identities."""
    bench = manifest[manifest["split"] == "bench"].sort_values("clip_id")
    rng = np.random.default_rng(seed)
    queues = []
    for _, group in bench.groupby("identity", sort=True):
        rows = group.to_dict("records")
        cands = [(r, t) for r in rows for t in rows if r["scene"] != t["scene"]]
        queues.append([cands[i] for i in rng.permutation(len(cands))])
    pairs: list[dict] = []
    while len(pairs) < n and any(queues):
        for q in queues:
            if q and len(pairs) < n:
                ref, tgt = q.pop()
                pairs.append(
                    {
                        "pair_id": f"pair{len(pairs):03d}",
                        "identity": ref["identity"],
                        "reference_clip": ref["clip_id"],
                        "reference": ref["path"],
                        "reference_mask": ref["mask_path"],
                        "reference_scene": ref["scene"],
                        "target_clip": tgt["clip_id"],
                        "target": tgt["path"],
                        "target_mask": tgt["mask_path"],
                        "target_scene": tgt["scene"],
                        "driving_audio": tgt["audio_path"],
                    }
                )
    return pairs


def write_pairs(path: str | Path, pairs: list[dict], clips_root: str | Path) -> None:
    """Save pairs as JSON; clip paths resolve against `root`, stored relative to the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = os.path.relpath(Path(clips_root).resolve(), path.parent.resolve())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"root": root, "count": len(pairs), "pairs": pairs}, indent=1))
    os.replace(tmp, path)


def load_pairs(path: str | Path) -> tuple[Path, list[dict]]:
    """(clips root as a path, pairs) from a file written by `write_pairs`."""
    path = Path(path)
    data = json.loads(path.read_text())
    return (path.parent / data["root"]).resolve(), data["pairs"]
