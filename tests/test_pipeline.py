"""TAVRPipeline end to end on a tiny random model: lengths, chunking, files, errors, save/load."""

import dataclasses

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tavr.cli import app
from tavr.config import GenerateConfig, ModelConfig, SynthConfig
from tavr.data import synth
from tavr.data.video import read_video, write_audio, write_video
from tavr.pipeline import TAVRPipeline, mask_to_latent, reference_length

GEN = GenerateConfig(size=64, chunk_frames=9, reference_frames=9, steps=2, sampler="euler")
MODEL = ModelConfig(num_layers=2)
SYN = SynthConfig(size=64)


@pytest.fixture(scope="module")
def pipe():
    return TAVRPipeline.from_config(MODEL, GEN, seed=0)


@pytest.fixture(scope="module")
def clips():
    specs = synth.plan(SynthConfig())
    return synth.render_clip(SYN, specs[0]), synth.render_clip(SYN, specs[9])


def _run(pipe, clips, seconds, **kw):
    ref, tgt = clips
    audio = np.resize(tgt.audio, int(seconds * 16000))
    mask = tgt.masks[:1]
    return pipe(ref.frames, tgt.frames, audio, reference_audio=ref.audio, background_mask=mask[0], **kw)


@pytest.mark.parametrize("seconds", [0.2, 0.36, 1.0])
def test_output_length_equals_the_audio(pipe, clips, seconds):
    out = _run(pipe, clips, seconds)
    assert out.frames.shape == (round(seconds * 25), 64, 64, 3)
    assert len(out.audio) == round(seconds * 25) * 640


def test_later_chunks_depend_on_the_motion_latents(clips):
    with_motion = TAVRPipeline.from_config(MODEL, GEN, seed=0)
    with_motion.transformer.motion_embedding.data.normal_()  # trained models use it; make it matter
    no_motion = TAVRPipeline.from_config(MODEL, dataclasses.replace(GEN, motion_frames=0), seed=0)
    no_motion.transformer.load_state_dict(with_motion.transformer.state_dict())
    a, b = _run(with_motion, clips, 0.72), _run(no_motion, clips, 0.72)  # two chunks of 9 frames
    assert np.array_equal(a.frames[:9], b.frames[:9])  # the first chunk has no motion input
    assert not np.array_equal(a.frames[9:], b.frames[9:])


def test_seed_and_keep_ratio_matter(pipe, clips):
    base = _run(pipe, clips, 0.36, seed=1)
    assert np.array_equal(base.frames, _run(pipe, clips, 0.36, seed=1).frames)
    assert not np.array_equal(base.frames, _run(pipe, clips, 0.36, seed=2).frames)
    pipe.transformer.token_selector.score.weight.data.normal_()
    try:
        assert not np.array_equal(base.frames, _run(pipe, clips, 0.36, seed=1, keep_ratio=0.25).frames)
    finally:
        pipe.transformer.token_selector.score.weight.data.zero_()


def test_guidance_runs_the_extra_passes(pipe, clips):
    calls = []
    hook = pipe.transformer.register_forward_pre_hook(lambda m, a, kw: calls.append((kw["reference"] is None, kw["audio"] is None)), with_kwargs=True)
    try:
        _run(pipe, clips, 0.2, reference_guidance=2.0, audio_guidance=3.0)
    finally:
        hook.remove()
    assert set(calls) == {(False, False), (False, True), (True, True)} and len(calls) == 3 * GEN.steps
    # audio first with the audio unguided: without the reference (audio on) and with both, two passes a step
    calls.clear()
    audio_first = TAVRPipeline(pipe.transformer, pipe.vae, dataclasses.replace(GEN, guidance_order="audio"))
    hook = pipe.transformer.register_forward_pre_hook(lambda m, a, kw: calls.append((kw["reference"] is None, kw["audio"] is None)), with_kwargs=True)
    try:
        _run(audio_first, clips, 0.2, reference_guidance=3.0)
    finally:
        hook.remove()
    assert set(calls) == {(True, False), (False, False)} and len(calls) == 2 * GEN.steps


def test_the_step_callback_sees_every_step_of_every_chunk(pipe, clips):
    """callback_on_step_end(chunk, step, latent) after each of the 2 steps of both chunks of a 17-frame call;
    each chunk's last latent is the one decoded; progress counts the same steps; the output is unchanged."""
    seen, counts = [], []
    out = _run(pipe, clips, 0.68, seed=3, progress=lambda i, n: counts.append((i, n)),
               callback_on_step_end=lambda k, i, x: seen.append((k, i, x.clone())))  # fmt: skip
    assert [(k, i) for k, i, _ in seen] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert counts == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert torch.equal(seen[1][2], out.latents[0]) and torch.equal(seen[3][2], out.latents[1])
    assert not torch.equal(seen[0][2], seen[1][2])
    assert np.array_equal(out.frames, _run(pipe, clips, 0.68, seed=3).frames)


def test_bad_inputs_raise_clear_errors(pipe, clips):
    ref, tgt = clips
    with pytest.raises(ValueError, match="no face found in the reference"):  # a larger reference is cropped around its face
        pipe(np.zeros((9, 128, 128, 3), np.uint8), tgt.frames, tgt.audio)
    with pytest.raises(ValueError, match="target background frames are 16x16; this model needs at least 32"):
        pipe(ref.frames, np.zeros((16, 16, 3), np.uint8), tgt.audio)
    with pytest.raises(ValueError, match="reference video has 3 frames; at least 5"):
        pipe(ref.frames[:3], tgt.frames, tgt.audio)
    with pytest.raises(ValueError, match="driving audio is empty"):
        pipe(ref.frames, tgt.frames, np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="uint8 frames"):
        pipe(ref.frames.astype(np.float32), tgt.frames, tgt.audio)


def test_bad_options_audio_and_outputs_fail_before_any_denoising(pipe, clips, tmp_path, monkeypatch):
    """--steps 0 and keep_ratio 0 are errors, not the defaults; NaN or inf audio and an output that
    cannot be written fail before the first network call; a reference without audio says so."""
    ref, tgt = clips
    calls = []
    monkeypatch.setattr(pipe.transformer, "forward", lambda *a, **k: calls.append(1))
    audio = tgt.audio[:8000].copy()
    for kwargs, message in (({"num_steps": 0}, "num_steps must be at least 1"), ({"keep_ratio": 0.0}, r"keep_ratio must be in \(0, 1\]"),
                            ({"out_path": tmp_path}, "is a folder"), ({"out_path": tmp_path / "x.avi"}, "must end in .mp4")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            pipe(ref.frames, tgt.frames, audio, reference_audio=ref.audio, **kwargs)
    for bad in (np.nan, np.inf):
        broken = audio.copy()
        broken[100] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            pipe(ref.frames, tgt.frames, broken, reference_audio=ref.audio)
    assert calls == []
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="no audio track"):
        pipe(ref.frames, tgt.frames, audio[:3200], num_steps=1)


def test_an_mp4s_audio_track_lasts_as_long_as_its_video(clips, tmp_path):
    """AAC pads its last frame: 2.00 s of audio in an mp4 decodes to 2.048 s unless cut to the stream's length."""
    from tavr.data.video import read_audio

    ref, _ = clips
    write_video(tmp_path / "v.mp4", ref.frames[:50], 25, np.resize(ref.audio, 32000), 16000)
    assert len(read_audio(tmp_path / "v.mp4", 16000)) == 32000


def test_save_load_round_trip_is_bit_exact(pipe, clips, tmp_path):
    pipe.save_pretrained(tmp_path / "model")
    loaded = TAVRPipeline.from_pretrained(tmp_path / "model")
    for (k, v), w in zip(pipe.transformer.state_dict().items(), loaded.transformer.state_dict().values()):
        assert torch.equal(v, w), k
    assert loaded.config == pipe.config
    assert np.array_equal(_run(pipe, clips, 0.36).frames, _run(loaded, clips, 0.36).frames)
    with pytest.raises(FileNotFoundError, match="not a TAVR pipeline"):
        TAVRPipeline.from_pretrained(tmp_path)


def test_helpers():
    assert [reference_length(n, 49) for n in (1, 4, 5, 50, 100)] == [1, 1, 5, 49, 49]
    mask = np.zeros((9, 16, 16), bool)
    mask[6, 0, 0] = True  # frame 6 belongs to latent frame 2 (frames 5-8)
    lat = mask_to_latent(mask)
    assert lat.shape == (1, 1, 3, 2, 2) and lat.sum() == 1 and lat[0, 0, 2, 0, 0] == 1


def test_generate_command_writes_a_playable_mp4(pipe, clips, tmp_path):
    ref, tgt = clips
    pipe.save_pretrained(tmp_path / "model")
    write_video(tmp_path / "ref.mp4", ref.frames, 25, ref.audio, 16000)
    write_video(tmp_path / "bg.mp4", tgt.frames, 25)
    write_audio(tmp_path / "a.wav", np.resize(tgt.audio, 8000), 16000)
    res = CliRunner().invoke(app, ["generate", "--model", str(tmp_path / "model"), "--reference", str(tmp_path / "ref.mp4"),
                                   "--background", str(tmp_path / "bg.mp4"), "--audio", str(tmp_path / "a.wav"),
                                   "--out", str(tmp_path / "out.mp4"), "--steps", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = read_video(tmp_path / "out.mp4")
    assert out.num_frames == 12 and out.fps == 25 and len(out.audio) == 12 * 640
    res = CliRunner().invoke(app, ["generate", "--model", str(tmp_path), "--reference", str(tmp_path / "ref.mp4"),
                                   "--background", str(tmp_path / "bg.mp4"), "--audio", str(tmp_path / "a.wav"),
                                   "--out", str(tmp_path / "x.mp4")])  # fmt: skip
    assert res.exit_code == 2 and "not a TAVR pipeline" in " ".join(res.output.split())
    for extra, message in ((["--out", str(tmp_path)], "is a folder"), (["--out", str(tmp_path / "y.mp4"), "--steps", "0"], "--steps must be at least 1"),
                           (["--out", str(tmp_path / "y.mp4"), "--keep-ratio", "0"], "--keep-ratio must be in")):  # fmt: skip
        res = CliRunner().invoke(app, ["generate", "--model", str(tmp_path / "model"), "--reference", str(tmp_path / "ref.mp4"),
                                       "--background", str(tmp_path / "bg.mp4"), "--audio", str(tmp_path / "a.wav"), *extra])  # fmt: skip
        assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output


def test_init_model_writes_a_loadable_pipeline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("model:\n  num_layers: 1\ngenerate:\n  size: 64\n")
    res = CliRunner().invoke(app, ["init-model", "--out", "m"])
    assert res.exit_code == 0, res.output
    pipe = TAVRPipeline.from_pretrained(tmp_path / "m")
    assert pipe.transformer.config.num_layers == 1 and pipe.config.size == 64
    res = CliRunner().invoke(app, ["init-model", "--out", "w", "--wan", "nowhere"])
    assert res.exit_code == 2 and "no Wan transformer directory" in res.output


def test_chunk_seams_are_continuous(pipe, clips):
    """Each later chunk starts on the previous chunk's last frame: its first latent frame is that
    frame's VAE encoding exactly, and the decoder continues from it."""
    out = _run(pipe, clips, 1.0)  # 25 frames: chunks of 9, 8 and 8 new frames
    assert len(out.latents) == 3
    stride = GEN.chunk_frames - 1
    for k in (1, 2):
        seam_frame = out.frames[k * stride]  # the last frame of chunk k - 1, shared with chunk k
        expected = pipe.encode_video(seam_frame[None])
        assert torch.equal(out.latents[k][:, :, :1], expected)
    assert out.frames.shape[0] == 25


def test_generation_runs_through_a_fitted_patch_codec(clips, tmp_path):
    """A pipeline with a codec fitted on real frames: what comes out is that codec's decoding of the
    sampled latents, the reference is its encoding, and save/load keeps the fitted basis."""
    from tavr.models.codec import PATCH_CODEC, PatchCodec
    from tavr.pipeline import to_frames, to_video_tensor

    ref, tgt = clips
    codec = PatchCodec(PATCH_CODEC)
    codec.fit([to_video_tensor(ref.frames[:25]), to_video_tensor(tgt.frames[:25])])
    torch.manual_seed(0)
    pipe = TAVRPipeline(TAVRPipeline.from_config(MODEL, GEN, seed=0).transformer, codec, GEN)
    out = _run(pipe, clips, 0.36)  # 9 frames: one chunk
    assert np.array_equal(out.frames, to_frames(codec.decode(out.latents[0])))
    assert not np.array_equal(out.frames, to_frames(PatchCodec(PATCH_CODEC).decode(out.latents[0])))
    pipe.save_pretrained(tmp_path / "p")
    loaded = TAVRPipeline.from_pretrained(tmp_path / "p")
    assert isinstance(loaded.vae, PatchCodec) and torch.equal(loaded.vae.group_basis, codec.group_basis)
    assert torch.equal(loaded.encode_video(ref.frames[:9]), codec.encode(to_video_tensor(ref.frames[:9])))
