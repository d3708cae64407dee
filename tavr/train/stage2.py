"""Stage 2: cross-scene reference fine-tuning, initialised from stage 1.

    python -m tavr.train.stage2 [--params params.yaml] [--resume auto|never|PATH]

The same loop as stage 1 (`tavr.train.stage1`), read from the `stage2` params
section: the reference of each target window comes from another scene of the same
identity (`pairing: cross_scene`), and the weights start from `init` (stage 1's
pipeline folder), so the model learns to carry a person across scenes.
"""

from __future__ import annotations

from tavr.train.stage1 import main as _main


def main(argv: list[str] | None = None) -> None:
    _main(argv, section="stage2")


if __name__ == "__main__":
    main()
