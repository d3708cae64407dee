"""A params file for the pipeline tests: the embedded default shrunk to seconds per step."""

import pytest
import yaml

FAST_RUN = {"batch_size": 2, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 1, "tracker": "none", "dvclive": False}
FLOW = {"run": {**FAST_RUN, "steps": 2}, "val_batches": 1, "heldout": {"count": 0}}
RL = {"run": {**FAST_RUN, "steps": 1, "batch_size": 1, "checkpoint_every": 1}, "group_size": 2, "sample_steps": 2,
      "train_timesteps": 1, "identity_frames": 1, "heldout": {"count": 0}}  # fmt: skip
TINY = {
    "synth": {"identities": 3, "scenes": 4, "bench_identities": 2, "bench_scenes": 2, "scenes_per_identity": 2,
              "clips_per_scene": 1, "workers": 2},
    "ingest": {"bench_pairs": 2, "workers": 2},
    "codec": {"eval_clips": 1},
    "latents": {"batch": 4},
    "stage1": FLOW,
    "stage2": {**FLOW, "pairing": "cross_scene"},
    "stage3": RL,
    "image_stage1": {**FLOW, "reference": "image"},
    "image_stage2": {**FLOW, "pairing": "cross_scene", "reference": "image"},
    "image_stage3": {**RL, "reference": "image"},
    "bench": {"limit": 2, "steps": 1, "identity_frames": 1, "grid_pairs": 1},
    "kubeflow": {"retries": 0, "caching": False},
}  # fmt: skip


@pytest.fixture(scope="session")
def tiny_params() -> str:
    """The text of a params.yaml every pipeline step accepts, for a data set of 6 clips."""
    return yaml.safe_dump(TINY)
