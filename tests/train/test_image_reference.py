"""The image-reference baseline trains with the stages' own loops on one reference frame."""

import numpy as np
import pandas as pd
import pytest
import torch

from tavr.config import FlowStageConfig, HeldoutConfig, RLStageConfig, RunConfig, TAVRConfig
from tavr.data.video import read_video
from tavr.models.vae import load_vae
from tavr.pipeline import TAVRPipeline, to_video_tensor
from tavr.train import stage1, stage3_rl
from tavr.train.stage1 import LatentCache



def test_an_image_reference_is_the_cached_windows_first_latent_frame(cache, clips):
    lc = LatentCache(cache / "latents")
    rows = [0, 1]
    video, image = lc.batch(rows, rows), lc.batch(rows, rows, reference="image")
    assert image["reference"].shape[2] == 1 and video["reference"].shape[2] == lc.tensors["latent"].shape[2]
    assert torch.equal(image["reference"], video["reference"][:, :, :1])
    assert image["reference_audio"] is None and video["reference_audio"] is not None
    with pytest.raises(ValueError, match="reference"):
        lc.batch(rows, rows, reference="portrait")
    # the causal VAE codes a window's first frame alone: encoding that frame as an image gives the cached latent
    me = lc.index.iloc[0]
    frames = read_video(clips.parent / me["path"]).frames[me["start_frame"] : me["start_frame"] + 1]
    vae = load_vae(cache / "codec")
    with torch.no_grad():
        single = vae.encode(to_video_tensor(frames))
    cached = lc.tensors["latent"][0, :, :1].float()
    assert torch.allclose(single[0], cached, atol=2e-2 * cached.abs().max().item())


def test_image_stages_save_a_pipeline_that_takes_one_frame_and_no_reference_audio(cache, clips, tmp_path):
    root = TAVRConfig()
    run = RunConfig(steps=2, batch_size=2, warmup_steps=1, ema_decay=0.0, checkpoint_every=2, log_every=1, tracker="none")
    cfg = FlowStageConfig(run=run, reference="image", cache=str(cache / "latents"), vae=str(cache / "codec"),
                          out=str(tmp_path / "model"), run_dir=str(tmp_path / "run"), val_batches=1,
                          heldout=HeldoutConfig(count=0))  # fmt: skip
    metrics = stage1.train(cfg, root, {})
    assert metrics["steps"] == 2 and np.isfinite(metrics["val_loss"])
    pipe = TAVRPipeline.from_pretrained(cfg.out)
    assert (pipe.config.reference_frames, pipe.config.min_reference_frames, pipe.config.reference_audio) == (1, 1, False)
    clip = read_video(clips.parent / pd.read_parquet(clips)["path"].iloc[0])
    out = pipe(clip.frames[0], clip.frames[:9], clip.audio[: 16000 * 9 // 25], num_steps=2)  # one image as the reference
    assert out.frames.shape == (9, 128, 128, 3)
    # an image model's reference audio is ignored: giving some does not change the result
    again = pipe(clip.frames[0], clip.frames[:9], clip.audio[: 16000 * 9 // 25], reference_audio=clip.audio, num_steps=2)
    assert np.array_equal(out.frames, again.frames)

    # stage 3 refuses to continue a model trained on the other kind of reference
    run = RunConfig(steps=1, batch_size=1, tracker="none")
    rl = RLStageConfig(run=run, init=cfg.out, cache=str(cache / "latents"), manifest=str(clips), out=str(tmp_path / "rl"),
                       run_dir=str(tmp_path / "rl_run"), group_size=2, sample_steps=2, heldout=HeldoutConfig(count=0))  # fmt: skip
    with pytest.raises(ValueError, match="reference"):
        stage3_rl.train(rl, root, {})
