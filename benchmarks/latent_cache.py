"""Latent cache speed: the `latents` stage run once per codec, side by side on the same clips.

    .venv/bin/python benchmarks/latent_cache.py --vae models/codec models/vae [--json OUT]

Each codec folder (tavr.models.vae.load_vae) encodes every window of every clip of the manifest
exactly as `dvc repro latents` does (tavr.train.latents.encode_cache, the params' latents and
generate sections), into a temporary folder. Reports seconds and windows per codec; the decoding
of the mp4s, the masks and the audio features are the same work in every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

from tavr.config import load_config
from tavr.train.latents import encode_cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vae", nargs="+", default=["models/codec"], help="codec folders")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    cfg = load_config(args.params)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, folder in enumerate(args.vae):
            latents = dataclasses.replace(cfg.latents, vae=folder, out=str(Path(tmp) / f"cache{i}"))
            summary = encode_cache(latents, cfg.generate, progress=False)
            runs[folder] = {"seconds": round(summary["seconds"], 1), "windows": summary["windows"]}
            print(folder, json.dumps(runs[folder]))
    first = runs[args.vae[0]]["seconds"]
    result = {"runs": runs, "speedup_of_first": {k: round(v["seconds"] / first, 2) for k, v in runs.items()},
              "cpu_threads": os.cpu_count()}  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
