"""The first step: each step's own sections of the params (tavr.steps.split_params). Every other step
takes only its slice as its `params` input, so a step's cache key changes only when the sections it
reads change: editing serve.port re-runs the deploy step, never training."""

from typing import NamedTuple

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def split_params(params: str) -> NamedTuple("Params", [("ingest", str), ("qa", str), ("codec", str), ("latents", str),
                                                       ("stage1", str), ("stage2", str), ("stage3", str),
                                                       ("image_stage1", str), ("image_stage2", str), ("image_stage3", str),
                                                       ("bench", str), ("report", str), ("gate", str), ("deploy", str)]):  # fmt: skip
    """The params text -> one JSON slice per step (its sections, `preset`, and the list of them); one output
    per key of tavr.steps.STEP_SECTIONS (tests/pipelines/test_kfp_pipeline.py checks they agree)."""
    from collections import namedtuple

    from tavr import steps

    parts = steps.split_params(params)
    return namedtuple("Params", list(parts))(**parts)
