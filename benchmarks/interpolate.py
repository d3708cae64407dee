"""A pipeline folder whose transformer interpolates two others' (WiSE-FT), to measure `interpolate` after the fact.

    .venv/bin/python benchmarks/interpolate.py START TUNED SHARE OUT

OUT = TUNED's pipeline folder with every transformer tensor share x TUNED's + (1 - share) x START's
(tavr.train.common.interpolate_weights, what `stage2.interpolate` does when stage 2 saves), so trained
models of one run can be compared at several shares with benchmarks/guidance_val.py without retraining:

    python benchmarks/interpolate.py models/stage1 models/stage2 0.5 /tmp/s2_half
    python benchmarks/guidance_val.py --setting s2=models/stage2:video:6:3 --setting half=/tmp/s2_half:video:6:3
"""

from __future__ import annotations

import sys
from pathlib import Path

from tavr.files import load_weights
from tavr.pipeline import TAVRPipeline
from tavr.train.common import interpolate_weights


def main() -> None:
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    start, tuned, share, out = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
    pipe = TAVRPipeline.from_pretrained(tuned)
    interpolate_weights(pipe.transformer, load_weights(start / "transformer" / "model.safetensors"), share)
    pipe.save_pretrained(out)
    print(f"wrote {out}: {share:g} x {tuned} + {1 - share:g} x {start}")


if __name__ == "__main__":
    main()
