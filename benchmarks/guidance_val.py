"""Inference knobs on a validation slice of the bench: sampler steps and reference guidance.

    python benchmarks/guidance_val.py [--pairs data/bench_pairs.json] [--start 10] [--count 30]
        [--seed 0] [--setting NAME=MODEL:PROTOCOL:STEPS:GUIDANCE[:ORDER] ...] [--json benchmarks/results/guidance_val.json]

Knobs are chosen on bench pairs 11-40 (`bench.validation`: the same ten held-out people in other
clips), which the report never scores (it takes `bench.limit` pairs outside them). Each setting generates every pair of
the slice with `tavr.eval.benchmark.generate` (the bench's seeds, frames, scoring and gallery of the
slice's people) from the trained pipelines `make run` leaves: TAVR (`models/stage3`, video
reference) and the raw-image baseline (`models/image/stage3`, first frame), so a knob that helps
only one method shows. Reported per setting: face rate, identification (id_top1), margin, raw
identity, lip sync and person PSNR, means over the slice. `--setting` (repeatable) replaces the
default settings, e.g. `--setting s1=models/stage1:video:8:3` to compare trained variants side by side;
ORDER is `generate.guidance_order` (reference | audio; default: the saved pipeline's);
`--generate KEY=VALUE` overrides a generation default for every setting (shift=3.0, sampler=euler);
`--seed` shifts every pair's noise (pair i uses seed + i) to see how much of a difference is the draw.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from tavr.config import load_config, params_path
from tavr.data.pairs import load_pairs, write_pairs
from tavr.eval.benchmark import generate
from tavr.flow import GUIDANCE_ORDERS
from tavr.pipeline import TAVRPipeline

SETTINGS = (  # (name, model, protocol, sampler steps, reference guidance)
    ("tavr_s8", "models/stage3", "video", 8, 1.0),
    ("tavr_s16", "models/stage3", "video", 16, 1.0),
    ("tavr_s8_ref2", "models/stage3", "video", 8, 2.0),
    ("tavr_s8_ref3", "models/stage3", "video", 8, 3.0),
    ("image_raw_s8", "models/image/stage3", "raw", 8, 1.0),
    ("image_raw_s8_ref2", "models/image/stage3", "raw", 8, 2.0),
)
KEYS = ("face_rate", "id_top1", "id_margin", "identity", "lipsync", "person_psnr")


def _setting(text: str) -> tuple:
    """NAME=MODEL:PROTOCOL:STEPS:GUIDANCE[:ORDER] -> a row of SETTINGS (+ the guidance order)."""
    try:
        name, rest = text.split("=", 1)
        order = None
        if rest.rsplit(":", 1)[-1] in GUIDANCE_ORDERS:
            rest, order = rest.rsplit(":", 1)
        model, protocol, steps, guidance = rest.rsplit(":", 3)
        return name, model, protocol, int(steps), float(guidance), order
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=MODEL:PROTOCOL:STEPS:GUIDANCE[:ORDER], got {text!r}") from None


def _override(text: str) -> tuple[str, object]:
    """KEY=VALUE -> (key, value as YAML reads it: 3.0 a float, euler a string)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"--generate expects KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="data/bench_pairs.json")
    first, stop = load_config(params_path(None)).bench.validation
    ap.add_argument("--start", type=int, default=first, help="first pair of the slice (0-based; default: bench.validation's)")
    ap.add_argument("--count", type=int, default=stop - first)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0, help="pair i is generated with seed + i")
    ap.add_argument("--setting", action="append", type=_setting, help="NAME=MODEL:PROTOCOL:STEPS:GUIDANCE[:ORDER] (repeatable)")
    ap.add_argument("--generate", action="append", default=[], metavar="KEY=VALUE",
                    help="a generate.* override for every setting, e.g. shift=3.0 (repeatable)")
    ap.add_argument("--json", default="benchmarks/results/guidance_val.json")
    args = ap.parse_args()
    overrides = dict(_override(text) for text in args.generate)
    root, pairs = load_pairs(args.pairs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        slice_file = Path(tmp) / "pairs.json"
        write_pairs(slice_file, pairs[args.start : args.start + args.count], root)
        for name, model, protocol, steps, guidance, *order in args.setting or SETTINGS:
            extra = {**overrides, **({"guidance_order": order[0]} if order and order[0] else {})}
            pipe = TAVRPipeline.from_pretrained(model, reference_guidance=guidance, **extra)
            start = time.perf_counter()
            s = generate(pipe, slice_file, Path(tmp) / name, steps, 0, args.seed, name, 4, 3, lambda i, n: None, protocol,
                         args.frames)  # fmt: skip
            means = s.get("metrics", s)
            rows.append({"setting": name, "seed": args.seed, "model": model, "protocol": protocol, "steps": steps, "reference_guidance": guidance,
                         "guidance_order": pipe.config.guidance_order, **overrides, "seconds": round(time.perf_counter() - start, 1),
                         **{k: means.get(k) for k in KEYS}})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    Path(args.json).write_text(json.dumps({"pairs": f"{args.pairs}[{args.start}:{args.start + args.count}]", "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
