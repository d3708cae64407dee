"""One typed, frozen config tree for every stage.

Defaults live only in these dataclasses. `params.yaml` holds one section per
stage and may set any subset of fields; an unknown key or a value of the wrong
type raises `ConfigError` naming its dotted path (`ingest.fpz`).

A root-level `preset` picks a named set of overrides (`PRESETS`) that sits
between the dataclass defaults and the file: file values always win.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tavr.config_rules import RULES


class ConfigError(ValueError):
    """A config file or override that does not match the dataclass tree."""


@dataclass(frozen=True)
class SynthConfig:
    """TAVR-Synth: procedural talking heads, the embedded default data set."""

    identities: int = 48  # parametric faces; the last `bench_identities` are held out
    scenes: int = 12  # backgrounds; the last `bench_scenes` are held out
    bench_identities: int = 10  # appear only in bench scenes, never in training
    bench_scenes: int = 3  # used only by bench identities
    scenes_per_identity: int = 4  # train scenes each train identity is filmed in
    clips_per_scene: int = 2  # clips per (identity, scene)
    seconds: float = 2.0  # clip length
    size: int = 128  # frame side in pixels (square)
    fps: int = 25
    audio_rate: int = 16000
    photo_fraction: float = 0.34  # share of scenes whose background is a bundled photograph
    seed: int = 0
    shift: float = 0.0  # 0: the training ranges; s > 0: face measures and voice drawn within s x each range's width outside it
    workers: int = 0  # render processes; 0 = one per CPU core


@dataclass(frozen=True)
class IngestConfig:
    """Ingest: any folder of videos -> face-centred clips + manifest."""

    pairs_out: str = ""  # where `tavr ingest` writes the cross-scene bench pairs ("" = OUT/bench_pairs.json; --pairs wins)
    size: int = 128  # output frame side (square crop around the face)
    fps: int = 25
    audio_rate: int = 16000
    clip_seconds: float = 2.0
    max_clips_per_video: int = 0  # 0 = as many as fit
    crop_margin: float = 1.9  # crop side = median face-box side x margin
    crop_shift: float = 0.12  # move the crop centre up by this share of its side (forehead, hair)
    detect_side: int = 256  # frames are resized so their shorter side is this before face detection
    decode_side: int = 720  # frames with a longer shorter side are downscaled to it on decode
    min_face_rate: float = 0.8  # clips with the face in fewer frames are quarantined
    bench_fraction: float = 0.0  # real data without a split: share of identities held out by hash
    bench_pairs: int = 158  # cross-scene pairs written to `pairs_out`
    pairs_seed: int = 0
    workers: int = 0  # 0 = one per CPU core


@dataclass(frozen=True)
class QAConfig:
    """The great-expectations gate over the ingest manifest."""

    fps: float = 25.0
    fps_tolerance: float = 0.01
    min_seconds: float = 1.9
    max_seconds: float = 2.1
    size: int = 128
    audio_rate: int = 16000
    min_face_rate: float = 0.8
    min_face_size: float = 0.25  # median face-box side / frame side
    max_face_size: float = 0.95
    min_clips: int = 1


@dataclass(frozen=True)
class ModelConfig:
    """The TAVR transformer. Field names follow diffusers' WanTransformer3DModel config.

    Saved as `config.json` beside the weights; the preset fills it, params may override.
    """

    patch_size: tuple[int, ...] = (1, 2, 2)
    num_attention_heads: int = 4
    attention_head_dim: int = 64
    in_channels: int = 16  # latent channels of the noisy target (Wan VAE z_dim)
    out_channels: int = 16
    text_dim: int = 384  # MiniLM; 4096 for umT5
    freq_dim: int = 64  # sinusoidal timestep features
    ffn_dim: int = 1024
    num_layers: int = 6
    cross_attn_norm: bool = True
    eps: float = 1e-6
    rope_theta: float = 10000.0
    # TAVR additions
    audio_dim: int = 320  # per-frame audio features (log-mel: 4 hops x 80 bins; wav2vec2 base: 768)
    mask_channels: int = 1  # background mask channels beside the masked-background latent
    reference_gap: int = 4  # latent frames between the target and the reference on the RoPE time axis
    keep_ratio: float = 1.0  # default share of reference tokens kept by token selection
    selection_temperature: float = 1.0  # Gumbel noise scale on selection scores while training
    gradient_checkpointing: bool = False
    # what the output layer predicts: "velocity" (Wan) or "sample", the clean latent x0, turned into
    # the velocity (x - x0) / sigma before it leaves the model; x-prediction is what made a small DiT
    # draw faces (docs/TRAINING.md), and lets the known background be composited in
    prediction: str = "sample"  # Wan checkpoints (from_wan, presets 1.3b and 14b) are "velocity"
    compose_background: bool = True  # "sample" only: x0 outside the person mask is the given background


@dataclass(frozen=True)
class GenerateConfig:
    """Inference: encoders, chunking for long audio, sampler and guidance defaults."""

    size: int = 128  # frame side; a multiple of 16 (codec 8x, patch 2x)
    fps: int = 25
    audio_rate: int = 16000
    chunk_frames: int = 49  # frames generated per chunk (4k + 1)
    motion_frames: int = 1  # latent frames of the previous chunk that condition the next
    reference_frames: int = 49  # at most this many reference frames (4k + 1) are used
    min_reference_frames: int = 5  # fewer is an error (the image-reference baseline sets 1)
    reference_audio: bool = True  # condition on the reference's own audio (an image reference has none)
    steps: int = 20
    sampler: str = "unipc"  # unipc | euler
    shift: float = 1.0  # sigma shift of the sampler (Wan uses 3-5 at 480p+)
    reference_guidance: float = 1.0  # classifier-free guidance scales; 1 = off (one pass)
    audio_guidance: float = 1.0
    guidance_order: str = "reference"  # reference: its guidance without audio (3 passes a step) | audio: with it (2 while audio_guidance is 1)
    keep_ratio: float = 1.0  # share of reference tokens kept
    vae: str = "patch"  # codec of a new pipeline: patch (tavr.models.codec) | wan-tiny | wan2.1 (tavr.models.vae)
    text_encoder: str = "minilm"  # minilm | umt5
    text_encoder_path: str = ""  # local folder for umt5
    audio_encoder: str = "logmel"  # logmel | wav2vec2
    audio_encoder_path: str = ""  # local folder for wav2vec2
    audio_context: int = 2  # video frames of audio context on each side of a latent frame's window
    max_output_side: int = 1024  # a background larger than the model's crop is scaled to at most this (longer side)


@dataclass(frozen=True)
class RunConfig:
    """Knobs every training stage shares."""

    seed: int = 0
    steps: int = 200  # optimizer updates
    batch_size: int = 4  # per process and micro-step
    grad_accum: int = 1  # micro-batches per update
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 10  # linear warmup from lr / warmup_steps to lr
    schedule: str = "cosine"  # cosine (down to min_lr_ratio * lr at `steps`) | constant
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    ema_decay: float = 0.999  # 0 = no EMA
    mixed_precision: str = "no"  # no | bf16 | fp16 | auto (bf16 on a CUDA GPU, fp32 on the CPU, where bf16 is slow)
    checkpoint_every: int = 50  # steps
    keep_checkpoints: int = 2  # newest kept; 0 = all
    log_every: int = 5  # steps
    tracker: str = "wandb"  # wandb | none (dvclive is separate)
    wandb_project: str = "tavr"
    wandb_mode: str = "offline"  # offline | online; WANDB_MODE=disabled in the environment wins
    dvclive: bool = True
    fsdp: bool = False  # FSDP2 over TAVRBlock (large presets, GPUs); otherwise DDP when launched on several


def _run(**kw) -> Callable[[], RunConfig]:
    return lambda: RunConfig(**kw)


@dataclass(frozen=True)
class CodecConfig:
    """Stage 0 of the default chain: fit the patch codec (tavr/models/codec.py) on the train clips.

    The grid is Wan2.1's (4 frames x 8 x 8 pixels per latent cell), which the transformer, the
    audio windows and the masks assume; the channels are the choice (docs/PERFORMANCE.md)."""

    z_dim: int = 16  # latent channels (the transformer's in_channels and out_channels)
    window_frames: int = 25  # frames per fitted window (4k + 1); each train clip gives floor(frames / window)
    max_windows: int = 0  # windows read for the fit (0 = every window of every train clip)
    eval_clips: int = 8  # bench clips whose reconstruction PSNR goes in metrics.json (read after the fit)
    init: str = ""  # a codec folder to take as it is instead of fitting (models/base/vae: the codec the base was trained with)
    manifest: str = "data/clips/manifest.parquet"
    out: str = "models/codec"


@dataclass(frozen=True)
class VAEStageConfig:
    """Optional (`tavr train vae`, not in the default chain): train the learned tiny Wan VAE that the
    patch codec replaced, on random crops of the clips; kept for side-by-side measurements."""

    run: RunConfig = field(default_factory=_run(steps=300, batch_size=4, lr=1e-3, warmup_steps=20, ema_decay=0.0, checkpoint_every=100, log_every=10))
    preset: str = "wan-tiny"  # a preset of tavr.models.vae
    frames: int = 25  # frames per training crop (4k + 1): the cache's window, so every chunk position is trained
    eval_frames: int = 25  # frames per bench clip in the PSNR metric (the latent cache's window length)
    crop: int = 32  # pixels per training crop side
    kl_weight: float = 1e-6
    stats_windows: int = 16  # windows used to estimate the per-channel latent mean and std
    manifest: str = "data/clips/manifest.parquet"
    out: str = "models/vae"
    run_dir: str = "runs/vae"


@dataclass(frozen=True)
class LatentsConfig:
    """Encode every clip once: the cache later stages train from."""

    vae: str = "models/codec"  # a codec folder (tavr.models.vae.load_vae)
    manifest: str = "data/clips/manifest.parquet"
    out: str = "data/latents"
    window_frames: int = 9  # frames per window (4k + 1); each clip gives floor(frames / window) windows
    batch: int = 8  # windows per VAE call
    device: str = "auto"  # where the codec encodes: auto (cuda when available) | cpu | cuda | cuda:N
    prompt: str = ""  # the text condition of every clip (TAVR-Synth has no captions)
    timing: str = "reports/train/latents.json"  # seconds taken (kept out of the byte-reproducible cache)


@dataclass(frozen=True)
class HeldoutConfig:
    """Identity on held-out bench pairs, scored after a stage: its `identity_heldout` metric."""

    pairs: str = "data/bench_pairs.json"
    count: int = 12  # the first `count` pairs (0 = skip the evaluation)
    steps: int = 10  # sampler steps per generation
    frames: int = 3  # frames embedded per video (dlib, ~150 ms each)
    seed: int = 0


@dataclass(frozen=True)
class FlowStageConfig:
    """Stages 1 and 2: flow-matching training of the transformer on the latent cache."""

    run: RunConfig = field(default_factory=_run(steps=200, batch_size=4, lr=3e-4, warmup_steps=10, ema_decay=0.99, checkpoint_every=50, log_every=10))
    pairing: str = "same_scene"  # same_scene: the other window of the clip | cross_scene: another scene, same identity
    same_scene_share: float = 0.0  # with cross_scene: chance a sample keeps a same-scene reference (stage 1's task, replayed)
    reference: str = "video"  # video: the reference window and its audio | image: its first frame alone (the baseline)
    init: str = ""  # a pipeline folder to start from ("" = fresh weights)
    interpolate: float = 1.0  # share of the trained weights in the saved model, the rest init's (WiSE-FT); 1 = as trained
    cache: str = "data/latents"
    vae: str = "models/codec"
    out: str = "models/stage1"
    run_dir: str = "runs/stage1"
    shift: float = 1.0  # noise-level shift of the logit-normal sigma sampling
    person_weight: float = 2.0  # extra loss weight inside the person mask
    min_keep_ratio: float = 0.25  # each step keeps a random share of reference tokens in [min, 1]
    drop_reference: float = 0.1  # chance a batch trains without the reference (for guidance)
    drop_audio: float = 0.1  # chance a batch trains without audio (for guidance)
    motion_prob: float = 0.3  # chance a batch continues clips: targets get their previous window's end as motion latents
    val_batches: int = 4  # held-out batches (bench windows, cross-scene references) for the validation loss
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)


def _pretrain_synth() -> SynthConfig:
    # seed 1: people and scenes drawn apart from the default's seed 0; no bench split (the default's bench is the test)
    return SynthConfig(seed=1, identities=64, scenes=120, bench_identities=0, bench_scenes=0, scenes_per_identity=8,
                       clips_per_scene=1)  # fmt: skip


def _pretrain_train() -> FlowStageConfig:
    run = RunConfig(steps=8000, batch_size=16, lr=6e-4, warmup_steps=200, ema_decay=0.999, checkpoint_every=50,
                    keep_checkpoints=2, log_every=10)  # fmt: skip
    return FlowStageConfig(run=run, pairing="cross_scene", out="models/base", run_dir="runs/pretrain", motion_prob=0.3,
                           val_batches=0, heldout=HeldoutConfig(count=0))  # fmt: skip


@dataclass(frozen=True)
class PretrainConfig:
    """The tiny base (`tavr pretrain`, `make pretrain`; not run by `make run`): the transformer trained long on a
    TAVR-Synth set of its own, with a curve of generated-frame quality against samples seen."""

    synth: SynthConfig = field(default_factory=_pretrain_synth)
    train: FlowStageConfig = field(default_factory=_pretrain_train)  # stage 1's loop and knobs
    data: str = "data/pretrain"  # synth/, clips/, latents/ of the pretraining set
    bench_pairs: str = "data/bench_pairs.json"  # the curve's unseen pairs (evaluated, never trained on)
    eval_every: int = 250  # steps between curve points (a multiple of train.run.checkpoint_every)
    eval_pairs: int = 8  # pairs per kind on the curve
    eval_steps: int = 10  # sampler steps per curve generation
    eval_frames: int = 25  # frames generated per curve pair; every 2nd is scored


@dataclass(frozen=True)
class RLStageConfig:
    """Stage 3: Flow-GRPO on identity (and lip-sync) rewards, initialised from stage 2."""

    run: RunConfig = field(default_factory=_run(steps=16, batch_size=2, lr=3e-5, warmup_steps=0, schedule="constant",
                                                ema_decay=0.0, checkpoint_every=4, log_every=1, grad_clip=1.0))
    init: str = "models/stage2"  # the policy's start and the KL reference
    cache: str = "data/latents"
    manifest: str = "data/clips/manifest.parquet"  # reference frames and driving audio for the rewards
    out: str = "models/stage3"
    run_dir: str = "runs/stage3"
    pairing: str = "cross_scene"  # reference of each rollout condition (batch_size conditions per step)
    reference: str = "video"  # video | image: as in stages 1 and 2
    conditions: int = 0  # > 0: a fixed pool of this many train windows, cycled (so early and late steps score the same); 0 = all
    group_size: int = 4  # G samples per condition; advantages are normalised within a group
    sample_steps: int = 8  # SDE steps per rollout
    shift: float = 1.0
    noise_level: float = 0.7  # SDE noise scale (0 = the ODE, no exploration)
    sigma_cap: float = 0.95  # sigma = 1 has an infinite SDE std; it uses this level's instead
    train_timesteps: int = 4  # steps of each trajectory that get a gradient (a random subset)
    updates_per_rollout: int = 2  # optimizer updates per rollout, over disjoint timestep subsets
    clip_range: float = 0.2
    adv_clip: float = 5.0  # advantages are clipped to +-adv_clip
    kl_weight: float = 0.01  # beta of the KL to the stage-2 model
    lora_rank: int = 0  # 0 = full fine-tuning; > 0 = LoRA adapters on the blocks, merged at the end
    lora_alpha: float = 8.0
    identity_weight: float = 1.0  # reward weights
    lipsync_weight: float = 0.25
    face_weight: float = 0.0  # dlib's detection score, mapped to [0, 1]: dense while faces are rare (tavr.rl.rewards)
    identity_frames: int = 2  # frames embedded per rollout video (dlib, ~150 ms each)
    lipsync_max_lag: int = 2
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)


@dataclass(frozen=True)
class BenchConfig:
    """The cross-scene benchmark (`tavr bench`): generate every pair, score it (tavr/eval), report."""

    pairs: str = "data/bench_pairs.json"
    model: str = "models/stage3"
    method: str = "tavr"  # the method's name in the report
    protocol: str = "video"  # video: the reference video | raw: its first frame | adapted: that frame put in the target scene
    out: str = "reports/bench/tavr"
    steps: int = 10  # sampler steps per generation
    frames: int = 25  # frames generated and scored per pair, from the start of its target and audio (0 = all)
    limit: int = 0  # the first `limit` pairs outside `validation` (0 = all); pairs go round-robin over people, so a prefix is balanced
    validation: tuple[int, ...] = (10, 40)  # [start, stop): pairs kept for choosing knobs (benchmarks/guidance_val.py), never scored
    ablations: tuple[str, ...] = ("tavr_stage1", "tavr_stage2", "tavr_keep025", "tavr_no_ref_audio",
                                  "tavr_wrong_ref")  # the claims' ablations and the wrong-reference control ...
    ablation_limit: int = 10  # ... score only the first this many of the `limit` pairs (0 = as many as `limit`)
    seed: int = 0  # pair i is generated with seed + i (the same noise for every method)
    identity_frames: int = 4  # frames embedded per video for identity (dlib, ~150 ms each)
    max_offset: int = 3  # lip-sync offsets searched, in frames either way
    gallery: str = "reports/bench/gallery.npz"  # every bench person's embedding (`tavr bench gallery`), read by every method
    report: str = "reports/bench"  # the report's folder: <method>/ results in, index.html + summary.json out
    methods: tuple[str, ...] = ("tavr", "image_raw", "image_adapted", "tavr_stage1", "tavr_stage2", "tavr_keep025",
                                "tavr_no_ref_audio", "tavr_wrong_ref", "upper_bound")  # report columns, in order
    grid_pairs: int = 6  # pairs shown as frame grids in the report

    def limit_for(self, method: str) -> int:
        """How many pairs `method` scores: `ablation_limit` for a claims' ablation (when set and smaller), else `limit`."""
        if method in self.ablations and self.ablation_limit > 0:
            return self.ablation_limit if self.limit <= 0 else min(self.limit, self.ablation_limit)
        return self.limit


@dataclass(frozen=True)
class GateConfig:
    """The deployment gate (`tavr gate`) over the report's summary, and export of a passing model."""

    summary: str = "reports/bench/summary.json"
    candidate: str = "tavr"  # the method in the summary that is up for deployment
    baselines: tuple[str, ...] = ("image_raw", "image_adapted")  # the candidate must beat each on identity
    identity_metric: str = "id_top1"  # identification accuracy (chance: 1 / people); id_margin or identity (raw) also work
    identity_margin: float = 0.0  # the 95% CI of (candidate - baseline) on it must lie above this
    lipsync_tolerance: float = 0.05  # its lip sync may trail a baseline's by at most this
    min_identity: float = 0.3  # absolute floors (min_identity applies to identity_metric: 3x chance for 10 people)
    min_lipsync: float = 0.1
    min_face_rate: float = 0.5
    min_bg_psnr: float = 15.0
    production: str = "models/production"  # a registered model (`tavr promote`): its bench.json is compared ("" = none)
    max_regression: float = 0.02  # identity and lip sync may fall at most this far below production's
    out: str = "reports/gate.json"
    model: str = "models/stage3"  # the candidate's pipeline folder
    export: str = "models/export"  # written by `tavr export`: the pipeline only when the gate passes


@dataclass(frozen=True)
class ServeConfig:
    """The KServe predictor (`tavr serve`): limits every request is checked against."""

    model_dir: str = "models/export"  # a pipeline folder (TAVRPipeline.from_pretrained)
    name: str = "tavr"  # the model name in /v1/models/<name>:predict and /v2/models/<name>/infer
    host: str = "127.0.0.1"  # address to listen on: this machine only; the manifests set 0.0.0.0
    port: int = 8080
    version: str = ""  # model_version in answers ("" = folder name + content hash)
    allowed_root: str = ""  # <field>_uri inputs are read only below this folder ("" = paths refused)
    max_request_mb: float = 32.0  # request body
    max_audio_seconds: float = 20.0  # driving audio
    max_reference_seconds: float = 10.0  # longer reference videos are cut to this
    max_steps: int = 50
    max_instances: int = 2  # instances per request, generated one after another
    queue_size: int = 2  # requests waiting behind the running one; more are answered 503
    retry_after_s: int = 10  # the Retry-After header of a 503
    timeout_s: float = 600.0  # a generation running longer is cancelled (504); a request may ask for less
    warmup_steps: int = 1  # denoising steps of the warm-up generation that precedes readiness
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N


@dataclass(frozen=True)
class KubeflowConfig:
    """The Kubeflow pipeline (pipelines/, components/), its deploy step and multi-node training."""

    image: str = "ghcr.io/tavr-platform/tavr:cpu"  # components' base image (`make image`)
    gpu_image: str = "ghcr.io/tavr-platform/tavr:cuda"  # training steps, trainer pods and predictor on GPUs
    accelerator_type: str = "nvidia.com/gpu"  # accelerator of training steps
    accelerator_limit: int = 0  # accelerators per training step (0 = CPU)
    retries: int = 2  # per step; training steps resume from their checkpoints when runs_pvc is set
    caching: bool = True  # a step whose inputs did not change is not run again
    runs_pvc: str = ""  # PVC mounted at /runs for training checkpoints that outlive a pod ("" = none)
    sources: str = "synth"  # ingest: synth, folders, or dvc:<path> pulled from the repository's remote
    repo: str = "/app"  # the DVC repository inside the image (dvc:<path> sources)
    dvc_remote: str = ""  # remote for dvc pull ("" = the repository's default)
    namespace: str = "tavr"  # where the InferenceService and TrainJobs go
    service: str = "tavr"  # the InferenceService's name
    canary_percent: int = 10  # traffic share of a new revision while an older one serves
    deploy_timeout_s: int = 900  # a new revision not ready by then is rolled back
    serve_gpu: bool = False  # the predictor asks for one GPU and uses gpu_image
    trainer_nodes: int = 1  # > 1: training steps run as a Kubeflow Trainer TrainJob on this many nodes
    trainer_runtime: str = "tavr-torch"  # the TrainingRuntime (manifests/trainer/runtime.yaml)
    trainer_gpus_per_node: int = 1
    trainer_timeout_s: int = 6 * 3600


@dataclass(frozen=True)
class TAVRConfig:
    """The root: one section per stage, plus the preset that was applied."""

    preset: str = "tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    qa: QAConfig = field(default_factory=QAConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    vae: VAEStageConfig = field(default_factory=VAEStageConfig)
    latents: LatentsConfig = field(default_factory=LatentsConfig)
    stage1: FlowStageConfig = field(default_factory=FlowStageConfig)
    stage2: FlowStageConfig = field(
        default_factory=lambda: FlowStageConfig(
            run=RunConfig(steps=150, batch_size=4, lr=1e-4, warmup_steps=10, ema_decay=0.99, checkpoint_every=50, log_every=10),
            pairing="cross_scene", init="models/stage1", out="models/stage2", run_dir="runs/stage2",
        )
    )
    stage3: RLStageConfig = field(default_factory=RLStageConfig)
    # the image-reference baseline: the same three stages with one reference frame (params.yaml sets
    # them from the stages above, so both models get the same data, steps and knobs)
    image_stage1: FlowStageConfig = field(
        default_factory=lambda: FlowStageConfig(reference="image", out="models/image/stage1", run_dir="runs/image_stage1")
    )
    image_stage2: FlowStageConfig = field(
        default_factory=lambda: FlowStageConfig(reference="image", pairing="cross_scene", init="models/image/stage1",
                                                out="models/image/stage2", run_dir="runs/image_stage2")  # fmt: skip
    )
    image_stage3: RLStageConfig = field(
        default_factory=lambda: RLStageConfig(reference="image", init="models/image/stage2", out="models/image/stage3",
                                              run_dir="runs/image_stage3")  # fmt: skip
    )
    bench: BenchConfig = field(default_factory=BenchConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    kubeflow: KubeflowConfig = field(default_factory=KubeflowConfig)


# Named overrides applied under the file's own values. `tiny` is the embedded
# default (CPU, 128 px, 2-s clips); the larger ones set the data resolution
# that matching model sizes are trained at.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "small": {
        "model": {"num_attention_heads": 8, "attention_head_dim": 64, "ffn_dim": 2048, "num_layers": 12, "freq_dim": 256},
        "synth": {"size": 256},
        "ingest": {"size": 256},
        "qa": {"size": 256},
    },
    "1.3b": {  # Wan2.1-T2V-1.3B shape, umT5 text, wav2vec2-base audio
        "model": {"num_attention_heads": 12, "attention_head_dim": 128, "ffn_dim": 8960, "num_layers": 30,
                  "freq_dim": 256, "text_dim": 4096, "audio_dim": 768, "prediction": "velocity", "compose_background": False},
        "generate": {"vae": "wan2.1"},
        "ingest": {"size": 480, "clip_seconds": 3.24, "fps": 25},
        "qa": {"size": 480, "min_seconds": 3.2, "max_seconds": 3.3},
    },
    "14b": {  # Wan2.1-T2V-14B shape
        "model": {"num_attention_heads": 40, "attention_head_dim": 128, "ffn_dim": 13824, "num_layers": 40,
                  "freq_dim": 256, "text_dim": 4096, "audio_dim": 1024, "prediction": "velocity", "compose_background": False},
        "generate": {"vae": "wan2.1"},
        "ingest": {"size": 720, "clip_seconds": 3.24, "fps": 25},
        "qa": {"size": 720, "min_seconds": 3.2, "max_seconds": 3.3},
    },
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Check `value` against a field's type hint; convert lists to tuples."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            if arm is type(None) and value is None:
                return None
            try:
                return _coerce(value, arm, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: {value!r} is not a {hint}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if hint is float:
        if isinstance(value, str) and _is_number(value):  # YAML 1.1 reads 3e-4 (no dot) as a string
            raise ConfigError(f"{path}: expected a number, got the string {value!r}; YAML needs a dot in the mantissa: "
                              f"write {_with_dot(value)}")  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{path}: must be a finite number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint in (str, bool):
        if not isinstance(value, hint):
            raise ConfigError(f"{path}: expected {hint.__name__}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    return value


def _build(cls: type, data: Any, path: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    defaults = {f.name: f.default_factory() for f in dataclasses.fields(cls) if f.default_factory is not dataclasses.MISSING}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in names:
            raise ConfigError(f"unknown key '{dotted}' (known here: {', '.join(sorted(names))})")
        if isinstance(value, dict) and dataclasses.is_dataclass(defaults.get(key)):
            value = _merge(dataclasses.asdict(defaults[key]), value)  # a partial section keeps its own defaults
        kwargs[key] = _coerce(value, hints[key], dotted)
        rule = RULES.get((cls.__name__, key))
        if rule is not None and not isinstance(kwargs[key], dict) and not rule[1](kwargs[key]):
            raise ConfigError(f"{dotted}: must be {rule[0]}, got {kwargs[key]!r}")
    return cls(**kwargs)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _with_dot(text: str) -> str:
    mantissa, _, exponent = text.lower().partition("e")
    return f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}" if exponent else text


def build_config(data: dict[str, Any] | None = None) -> TAVRConfig:
    """Build the tree from a plain dict (a parsed params.yaml), preset applied."""
    data = dict(data or {})
    preset = data.get("preset", TAVRConfig.preset)
    if preset not in PRESETS:
        raise ConfigError(f"preset: unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    return _build(TAVRConfig, _merge(PRESETS[preset], data))


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TAVRConfig:
    """Load `params.yaml` (or defaults when `path` is None) plus nested overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    return build_config(_merge(data, overrides or {}))


def parse_sets(sets: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """Command-line overrides `["a.b=c", ...]` -> nested {"a": {"b": c}}; each value is read as YAML
    (`bench.limit=0` is an int, `bench.validation=[0, 0]` a list, `bench.model=models/stage2` a string)."""
    out: dict[str, Any] = {}
    for item in sets or []:
        key, eq, text = item.partition("=")
        parts = key.strip().split(".")
        if not eq or not all(parts):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. bench.limit=10")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {e}") from None
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is set to a value and used as a section")
        node[parts[-1]] = value
    return out


def params_path(given: str | Path | None, default: str = "params.yaml") -> Path | None:
    """The params file a command reads: `given`, which must exist; else `default` when it exists;
    else None (the dataclass defaults). A path that was asked for and is missing never falls back."""
    if given is None:
        return Path(default) if Path(default).is_file() else None
    if not Path(given).is_file():
        raise ConfigError(f"params file {given} does not exist")
    return Path(given)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML-ready data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))
