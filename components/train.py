"""Training steps: the patch codec, the latent cache, flow-matching stages 1-2 and RL stage 3 (also
the image-reference baseline's, by `section`). `runs` keeps checkpoints: a folder that outlives the
pod (the pipeline mounts a PVC there on a cluster) makes a retried step resume; "" keeps them
beside the output."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def codec(params: str, clips: Input[Dataset], model: Output[Model], metrics: Output[Metrics]):
    """Stage 0: fit the patch codec on the train clips (seconds; nothing to resume)."""
    from tavr import steps

    for name, value in steps.codec(params, clips.path, model.path).items():
        metrics.log_metric(name, value)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def latents(params: str, clips: Input[Dataset], vae: Input[Model], cache: Output[Dataset], metrics: Output[Metrics]):
    from tavr import steps

    for name, value in steps.latents(params, clips.path, vae.path, cache.path).items():
        metrics.log_metric(name, value)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_stage(params: str, section: str, runs: str, latents: Input[Dataset], vae: Input[Model], clips: Input[Dataset],
                model: Output[Model], metrics: Output[Metrics], previous: Input[Model] = None):
    """Stage 1 or 2 (`section`: stage1, stage2, image_stage1, image_stage2); stage 2 starts from `previous`."""
    from tavr import steps

    start = previous.path if previous is not None else ""
    numbers = steps.flow_stage(params, section, latents.path, vae.path, clips.path, model.path, runs or model.path + ".runs", start)
    for name, value in numbers.items():
        metrics.log_metric(name, value)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def rl_stage(params: str, section: str, runs: str, latents: Input[Dataset], clips: Input[Dataset], previous: Input[Model],
             model: Output[Model], metrics: Output[Metrics]):
    """Stage 3 (`section`: stage3 or image_stage3), Flow-GRPO from the stage-2 model `previous`."""
    from tavr import steps

    numbers = steps.rl_stage(params, section, latents.path, clips.path, previous.path, model.path, runs or model.path + ".runs")
    for name, value in numbers.items():
        metrics.log_metric(name, value)
