"""Value rules of the config tree: what each field may hold beyond its type.

`RULES[(section class name, field)]` is (rule in words, check). `tavr.config` applies them to every
section it builds, so `tavr config`, every stage and the server refuse a value that makes no sense
with a ConfigError naming the key and the rule, before any work starts. Every float must also be
finite (NaN and inf are refused everywhere).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def at_least(low: float) -> tuple[str, Callable[[Any], bool]]:
    return f">= {low}", lambda v: v >= low


def above(low: float) -> tuple[str, Callable[[Any], bool]]:
    return f"> {low}", lambda v: v > low


def between(low: float, high: float, open_low: bool = False, open_high: bool = False) -> tuple[str, Callable[[Any], bool]]:
    text = f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    return text, lambda v: (v > low if open_low else v >= low) and (v < high if open_high else v <= high)


def one_of(*choices: str) -> tuple[str, Callable[[Any], bool]]:
    return f"one of {', '.join(choices)}", lambda v: v in choices


def frames_4k1() -> tuple[str, Callable[[Any], bool]]:
    return "4k + 1 frames (1, 5, 9, ...)", lambda v: v >= 1 and (v - 1) % 4 == 0


def multiple_of(n: int) -> tuple[str, Callable[[Any], bool]]:
    return f"a positive multiple of {n}", lambda v: v > 0 and v % n == 0


SHARE = between(0.0, 1.0)
KEEP = between(0.0, 1.0, open_low=True)

RULES: dict[tuple[str, str], tuple[str, Callable[[Any], bool]]] = {
    # the loop every stage shares
    ("RunConfig", "steps"): at_least(1),
    ("RunConfig", "batch_size"): at_least(1),
    ("RunConfig", "grad_accum"): at_least(1),
    ("RunConfig", "lr"): above(0),
    ("RunConfig", "weight_decay"): at_least(0),
    ("RunConfig", "warmup_steps"): at_least(0),
    ("RunConfig", "schedule"): one_of("cosine", "constant"),
    ("RunConfig", "min_lr_ratio"): SHARE,
    ("RunConfig", "grad_clip"): at_least(0),
    ("RunConfig", "ema_decay"): between(0.0, 1.0, open_high=True),
    ("RunConfig", "mixed_precision"): one_of("no", "bf16", "fp16", "auto"),
    ("RunConfig", "checkpoint_every"): at_least(1),
    ("RunConfig", "keep_checkpoints"): at_least(0),
    ("RunConfig", "log_every"): at_least(1),
    ("RunConfig", "tracker"): one_of("wandb", "none"),
    # the transformer
    ("ModelConfig", "num_attention_heads"): at_least(1),
    ("ModelConfig", "attention_head_dim"): multiple_of(2),
    ("ModelConfig", "in_channels"): at_least(1),
    ("ModelConfig", "out_channels"): at_least(1),
    ("ModelConfig", "ffn_dim"): at_least(1),
    ("ModelConfig", "num_layers"): at_least(1),
    ("ModelConfig", "keep_ratio"): KEEP,
    ("ModelConfig", "prediction"): one_of("velocity", "sample"),
    # inference
    ("GenerateConfig", "size"): multiple_of(16),
    ("GenerateConfig", "fps"): at_least(1),
    ("GenerateConfig", "audio_rate"): at_least(1000),
    ("GenerateConfig", "chunk_frames"): frames_4k1(),
    ("GenerateConfig", "reference_frames"): frames_4k1(),
    ("GenerateConfig", "min_reference_frames"): at_least(1),
    ("GenerateConfig", "motion_frames"): at_least(0),
    ("GenerateConfig", "steps"): at_least(1),
    ("GenerateConfig", "sampler"): one_of("unipc", "euler"),
    ("GenerateConfig", "shift"): above(0),
    ("GenerateConfig", "keep_ratio"): KEEP,
    ("GenerateConfig", "vae"): one_of("patch", "wan-tiny", "wan2.1"),
    ("GenerateConfig", "text_encoder"): one_of("minilm", "umt5"),
    ("GenerateConfig", "audio_encoder"): one_of("logmel", "wav2vec2"),
    ("GenerateConfig", "max_output_side"): at_least(16),
    ("GenerateConfig", "guidance_order"): one_of("reference", "audio"),
    # data
    ("SynthConfig", "shift"): between(0.0, 1.0),
    ("SynthConfig", "identities"): at_least(1),
    ("SynthConfig", "scenes"): at_least(1),
    ("SynthConfig", "bench_identities"): at_least(0),
    ("SynthConfig", "bench_scenes"): at_least(0),
    ("SynthConfig", "scenes_per_identity"): at_least(1),
    ("SynthConfig", "clips_per_scene"): at_least(1),
    ("SynthConfig", "seconds"): above(0),
    ("SynthConfig", "size"): multiple_of(16),
    ("SynthConfig", "fps"): at_least(1),
    ("SynthConfig", "photo_fraction"): SHARE,
    ("SynthConfig", "workers"): at_least(0),
    ("IngestConfig", "size"): multiple_of(16),
    ("IngestConfig", "fps"): at_least(1),
    ("IngestConfig", "clip_seconds"): above(0),
    ("IngestConfig", "crop_margin"): above(0),
    ("IngestConfig", "min_face_rate"): SHARE,
    ("IngestConfig", "bench_fraction"): between(0.0, 1.0, open_high=True),
    ("IngestConfig", "bench_pairs"): at_least(0),
    ("CodecConfig", "z_dim"): at_least(1),
    ("CodecConfig", "window_frames"): frames_4k1(),
    ("LatentsConfig", "window_frames"): frames_4k1(),
    ("LatentsConfig", "batch"): at_least(1),
    # training stages
    ("FlowStageConfig", "pairing"): one_of("same_scene", "cross_scene"),
    ("FlowStageConfig", "reference"): one_of("video", "image"),
    ("GateConfig", "identity_metric"): one_of("id_top1", "id_margin", "identity"),
    ("BenchConfig", "protocol"): one_of("video", "raw", "adapted", "wrong_ref"),
    ("FlowStageConfig", "shift"): above(0),
    ("FlowStageConfig", "person_weight"): at_least(0),
    ("FlowStageConfig", "min_keep_ratio"): KEEP,
    ("FlowStageConfig", "drop_reference"): SHARE,
    ("FlowStageConfig", "same_scene_share"): SHARE,
    ("FlowStageConfig", "interpolate"): KEEP,
    ("FlowStageConfig", "drop_audio"): SHARE,
    ("FlowStageConfig", "motion_prob"): SHARE,
    ("FlowStageConfig", "val_batches"): at_least(0),
    ("PretrainConfig", "eval_every"): at_least(0),
    ("PretrainConfig", "eval_pairs"): at_least(1),
    ("PretrainConfig", "eval_steps"): at_least(1),
    ("PretrainConfig", "eval_frames"): at_least(1),
    ("RLStageConfig", "conditions"): at_least(0),
    ("RLStageConfig", "group_size"): at_least(2),
    ("RLStageConfig", "sample_steps"): at_least(1),
    ("RLStageConfig", "train_timesteps"): at_least(1),
    ("RLStageConfig", "updates_per_rollout"): at_least(1),
    ("RLStageConfig", "noise_level"): above(0),
    ("RLStageConfig", "kl_weight"): at_least(0),
    ("RLStageConfig", "lora_rank"): at_least(0),
    # benchmark, gate, server
    ("BenchConfig", "steps"): at_least(1),
    ("BenchConfig", "limit"): at_least(0),
    ("BenchConfig", "frames"): at_least(0),
    ("BenchConfig", "identity_frames"): at_least(1),
    ("BenchConfig", "max_offset"): at_least(0),
    ("BenchConfig", "ablation_limit"): at_least(0),
    ("BenchConfig", "validation"): ("two pair indices [start, stop), 0 <= start <= stop",
                                    lambda v: len(v) == 2 and 0 <= v[0] <= v[1]),
    ("ServeConfig", "port"): between(1, 65535),
    ("LatentsConfig", "device"): ("auto, cpu, cuda or cuda:N", lambda v: v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())),
}
